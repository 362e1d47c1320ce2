export { errorResponse } from "@molecule/service-kit/http";

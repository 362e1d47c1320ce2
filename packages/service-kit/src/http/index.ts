export { isJsonType, parseWith } from "./body.ts";
export type { RequestVariables, ServiceEnv } from "./env.ts";
export { errorResponse, handleError, notFound, statusFor } from "./errors.ts";
export { limitBody, requestLog } from "./middleware.ts";
export { KEEPALIVE_MS, streamEvents, type TokenBound } from "./sse.ts";

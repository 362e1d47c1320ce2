export { isJsonType, parseWith } from "./body.ts";
export type { RequestVariables, ServiceEnv } from "./env.ts";
export {
  errorEnvelope,
  errorResponse,
  handleError,
  notFound,
  type ShapedError,
  shapeError,
  statusFor,
} from "./errors.ts";
export {
  frontDoor,
  frontDoorServer,
  type RawContext,
  type RawHandler,
  type RawRoute,
  readBody,
  writeJson,
} from "./front-door.ts";
export { limitBody, logRequest, newRequestId, requestLog } from "./middleware.ts";
export { KEEPALIVE_MS, streamEvents, type TokenBound } from "./sse.ts";

import { DomainError, type ErrorCode, type ErrorEnvelope } from "@molecule/contracts";
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Logger } from "pino";
import { loggableError } from "../log.ts";
import type { ServiceEnv } from "./env.ts";

/** The one place a domain error code becomes an HTTP status. */
export function statusFor(code: ErrorCode): ContentfulStatusCode {
  switch (code) {
    case "bad_request":
      return 400;
    case "unauthorized":
      return 401;
    case "forbidden":
      return 403;
    case "not_found":
      return 404;
    case "conflict":
    case "invalid_transition":
    case "idempotency_key_reused":
      return 409;
    case "payload_too_large":
      return 413;
    case "unsupported_media_type":
      return 415;
    case "rate_limited":
      return 429;
    case "backend_unavailable":
    case "upstream_unavailable":
    case "secrets_key_unavailable":
    case "wake_timeout":
      return 503;
    case "bad_gateway":
      return 502;
    case "gateway_timeout":
      return 504;
    case "internal":
      return 500;
  }
}

/** The error envelope's body; `details` only when given. */
export function errorEnvelope(
  code: ErrorCode,
  message: string,
  requestId: string,
  details?: unknown,
): ErrorEnvelope {
  const body: ErrorEnvelope = { error: { code, message, requestId } };
  if (details !== undefined) body.error.details = details;
  return body;
}

export function errorResponse<E extends ServiceEnv>(
  c: Context<E>,
  code: ErrorCode,
  message: string,
  details?: unknown,
) {
  return c.json(errorEnvelope(code, message, c.get("requestId") ?? "unknown", details), statusFor(code));
}

const CLIENT_ERROR_CODES: Partial<Record<number, ErrorCode>> = {
  400: "bad_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  409: "conflict",
  413: "payload_too_large",
  415: "unsupported_media_type",
  429: "rate_limited",
};

/**
 * A client's mistake reported by the framework rather than by our code: a body over the limit read as a stream
 * (hono's body limit throws from the read; its middleware then answers the 413), or a 4xx `HTTPException`.
 */
function clientError(error: unknown): { code: ErrorCode; message: string } | null {
  if (error instanceof Error && error.name === "BodyLimitError") {
    return { code: "payload_too_large", message: "body exceeds the size limit" };
  }
  if (error instanceof HTTPException && error.status >= 400 && error.status < 500) {
    return {
      code: CLIENT_ERROR_CODES[error.status] ?? "bad_request",
      message: error.message || "bad request",
    };
  }
  return null;
}

/** Domain errors that are the service's own fault (not the caller's, not an upstream's): worth a log line of their own. */
const SERVICE_FAULTS: ReadonlySet<ErrorCode> = new Set<ErrorCode>(["internal", "secrets_key_unavailable"]);

/** What an error thrown while serving a request is answered with: its code, a message fit to show, and details. */
export interface ShapedError {
  code: ErrorCode;
  message: string;
  details?: unknown;
}

/**
 * The one translation of a thrown error into what the client is told, for Hono's `onError` and the raw routes
 * (front-door.ts) alike: a domain error keeps its code and message, and a client error the framework raised gets its
 * 4xx; both are logged only by the request line, except a domain error that is the service's own fault
 * (`SERVICE_FAULTS`, e.g. a value sealed with a key this process lacks), also logged at error with its code and message
 * (a domain error's message is written to be shown). Anything else is logged once as an unhandled error (a database
 * error without its statement or parameters, see `loggableError`) and answered generically. `logger` is the request's.
 */
export function shapeError(error: unknown, logger: Logger | undefined): ShapedError {
  if (error instanceof DomainError) {
    if (SERVICE_FAULTS.has(error.code)) {
      logger?.error({ code: error.code, reason: error.message }, "request failed");
    }
    return { code: error.code, message: error.message, details: error.details };
  }
  const client = clientError(error);
  if (client) return client;
  logger?.error({ err: loggableError(error) }, "unhandled error");
  return { code: "internal", message: "internal error; quote the request id when reporting it" };
}

/** `app.onError`: {@link shapeError} in the envelope. */
export function handleError<E extends ServiceEnv>(error: unknown, c: Context<E>) {
  const shaped = shapeError(error, c.get("logger"));
  return errorResponse(c, shaped.code, shaped.message, shaped.details);
}

/** `app.notFound`: the envelope, naming the method and path nobody serves. */
export function notFound<E extends ServiceEnv>(c: Context<E>) {
  return errorResponse(c, "not_found", `no route for ${c.req.method} ${c.req.path}`);
}

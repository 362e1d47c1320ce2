import { DomainError, type ErrorCode, type ErrorEnvelope } from "@molecule/contracts";
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
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
      return 503;
    case "bad_gateway":
      return 502;
    case "gateway_timeout":
      return 504;
    case "internal":
      return 500;
  }
}

export function errorResponse<E extends ServiceEnv>(
  c: Context<E>,
  code: ErrorCode,
  message: string,
  details?: unknown,
) {
  const body: ErrorEnvelope = { error: { code, message, requestId: c.get("requestId") ?? "unknown" } };
  if (details !== undefined) body.error.details = details;
  return c.json(body, statusFor(code));
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

/**
 * `app.onError`: a domain error keeps its code and message, and a client error the framework raised gets its 4xx;
 * both are logged only by the request line, except a domain error that is the service's own fault (`SERVICE_FAULTS`,
 * e.g. a value sealed with a key this process lacks), also logged at error with its code and message (a domain
 * error's message is written to be shown). Anything else is logged once as an unhandled error (a database error
 * without its statement or parameters, see `loggableError`) and answered generically.
 */
export function handleError<E extends ServiceEnv>(error: unknown, c: Context<E>) {
  if (error instanceof DomainError) {
    if (SERVICE_FAULTS.has(error.code)) {
      c.get("logger")?.error({ code: error.code, reason: error.message }, "request failed");
    }
    return errorResponse(c, error.code, error.message, error.details);
  }
  const client = clientError(error);
  if (client) return errorResponse(c, client.code, client.message);
  c.get("logger")?.error({ err: loggableError(error) }, "unhandled error");
  return errorResponse(c, "internal", "internal error; quote the request id when reporting it");
}

/** `app.notFound`: the envelope, naming the method and path nobody serves. */
export function notFound<E extends ServiceEnv>(c: Context<E>) {
  return errorResponse(c, "not_found", `no route for ${c.req.method} ${c.req.path}`);
}

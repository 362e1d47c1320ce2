import { DomainError, type ErrorCode, type ErrorEnvelope } from "@molecule/contracts";
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
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

/** `app.onError`: a domain error keeps its code and message; anything else is logged and answered generically. */
export function handleError<E extends ServiceEnv>(error: unknown, c: Context<E>) {
  if (error instanceof DomainError) return errorResponse(c, error.code, error.message, error.details);
  c.get("logger")?.error({ err: error }, "unhandled error");
  return errorResponse(c, "internal", "internal error; quote the request id when reporting it");
}

/** `app.notFound`: the envelope, naming the method and path nobody serves. */
export function notFound<E extends ServiceEnv>(c: Context<E>) {
  return errorResponse(c, "not_found", `no route for ${c.req.method} ${c.req.path}`);
}

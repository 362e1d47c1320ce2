import { z } from "zod";

/** The closed set of error codes any service of the platform answers with. */
export const ERROR_CODES = [
  "bad_request",
  "unauthorized",
  "forbidden",
  "not_found",
  "conflict",
  "invalid_transition",
  "idempotency_key_reused",
  "payload_too_large",
  "unsupported_media_type",
  "rate_limited",
  "backend_unavailable",
  "upstream_unavailable",
  "bad_gateway",
  "gateway_timeout",
  /** A request to a suspended workspace woke it, and its agent was not back within the wake timeout. */
  "wake_timeout",
  /** A stored value was sealed with a secrets key this process is not configured with (or that does not open it). */
  "secrets_key_unavailable",
  "internal",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export const ErrorEnvelope = z.object({
  error: z.object({
    code: z.enum(ERROR_CODES),
    message: z.string(),
    requestId: z.string(),
    details: z.unknown().optional(),
  }),
});
export type ErrorEnvelope = z.infer<typeof ErrorEnvelope>;

/** A domain error: knows nothing of HTTP; the service maps `code` to a status in one place. */
export class DomainError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "DomainError";
  }
}

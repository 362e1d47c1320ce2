export type ProvisionerErrorCode =
  | "invalid_spec"
  | "image_unavailable"
  | "capacity"
  | "rate_limited"
  | "conflict"
  | "not_found"
  | "backend_unavailable"
  | "timeout"
  | "backend_error";

/** A backend failure with enough to decide whether to retry and to tell a person what happened. */
export class ProvisionerError extends Error {
  constructor(
    readonly code: ProvisionerErrorCode,
    message: string,
    readonly retryable: boolean,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = "ProvisionerError";
  }
}

export function isRetryable(error: unknown): boolean {
  return error instanceof ProvisionerError && error.retryable;
}

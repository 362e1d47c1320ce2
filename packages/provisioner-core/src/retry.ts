import { errors as undiciErrors } from "undici";
import { ProvisionerError } from "./errors.ts";

/** The backoff policy lives in contracts (pure, shared with service-kit and the agent SDK); re-exported here. */
export { Backoff, backoffDelay, parseRetryAfter, type RetryPolicy } from "@molecule/contracts";

const CONNECTION_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/** A send that never got an answer (refused, reset, timed out, DNS): safe to retry an idempotent call. */
export function isConnectionError(error: unknown): boolean {
  if (error instanceof undiciErrors.UndiciError) return true;
  const code = (error as { code?: unknown })?.code;
  return typeof code === "string" && (CONNECTION_CODES.has(code) || code.startsWith("UND_ERR"));
}

/** The connection-level failures that are timeouts, for messages and error codes. */
export function isTimeout(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return (
    code === "UND_ERR_HEADERS_TIMEOUT" ||
    code === "UND_ERR_BODY_TIMEOUT" ||
    code === "UND_ERR_CONNECT_TIMEOUT" ||
    code === "ETIMEDOUT"
  );
}

/** Names a connection failure by its code (`ECONNREFUSED`, `UND_ERR_SOCKET`) or class, never by its message. */
export function connectionCause(error: unknown): string {
  const code = (error as { code?: unknown })?.code;
  if (typeof code === "string" && /^[A-Z][A-Z0-9_]{1,40}$/.test(code)) return code;
  const name = error instanceof Error ? error.name : "";
  return /^[A-Za-z]{1,40}$/.test(name) ? name : "unknown";
}

/**
 * Waits `ms` with `sleep`, or ends with a retryable `timeout` as soon as `signal` fires (an operation abandoned at its
 * deadline stops waiting between a backend's retries and polls). `what` names the backend in the error.
 */
export function pauseUnlessAborted(
  sleep: (ms: number) => Promise<void>,
  ms: number,
  signal: AbortSignal | undefined,
  what: string,
): Promise<void> {
  if (!signal) return sleep(ms);
  const aborted = () => new ProvisionerError("timeout", `${what} call aborted while waiting`, true);
  if (signal.aborted) return Promise.reject(aborted());
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(aborted());
    signal.addEventListener("abort", onAbort, { once: true });
    sleep(ms).then(
      () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

import { errors as undiciErrors } from "undici";

/** Bounds for retrying a remote API call (429, 5xx, dropped connections). */
export interface RetryPolicy {
  /** Sends per call, the first included. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** No retry is started once this much time has passed since the first attempt. */
  maxElapsedMs: number;
}

/** Tracks attempts and elapsed time; answers how long to wait before the next attempt, or null to give up. */
export class Backoff {
  private attempt = 0;
  private readonly started: number;

  constructor(
    private readonly policy: RetryPolicy,
    private readonly now: () => number,
    private readonly random: () => number,
  ) {
    this.started = now();
  }

  get attempts(): number {
    return this.attempt;
  }

  /** Call after a failed attempt. */
  next(retryAfterMs?: number): number | null {
    this.attempt += 1;
    if (this.attempt >= this.policy.maxAttempts) return null;
    const cap = Math.min(this.policy.maxDelayMs, this.policy.baseDelayMs * 2 ** (this.attempt - 1));
    const delay = retryAfterMs ?? Math.round(cap / 2 + (this.random() * cap) / 2);
    if (this.now() - this.started + delay > this.policy.maxElapsedMs) return null;
    return delay;
  }
}

/** Parses Retry-After (delta seconds or an HTTP date) into milliseconds. */
export function parseRetryAfter(value: string | string[] | undefined, now: number): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (!raw) return undefined;
  if (/^\d+(\.\d+)?$/.test(raw.trim())) return Math.round(Number(raw) * 1000);
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

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

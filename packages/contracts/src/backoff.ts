/**
 * The one backoff policy: exponential growth from a base delay, capped, with "equal jitter" by default, and a
 * Retry-After from the other side honoured in place of the computed delay. Pure (the random source and the clock are
 * passed in), so every retry loop in the repository uses it and tests pin it.
 *
 * No zod and no I/O here: the agent SDK, bundled into the workspace image, imports this module alone
 * (`@molecule/contracts/backoff`); provisioner-core, service-kit and the apps use it through the package root.
 */

export interface BackoffOptions {
  /** Delay before the first retry, before jitter. */
  baseMs: number;
  /** Upper bound of any single delay. */
  maxMs: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /**
   * `equal` (default): a uniformly random value in [d/2, d], so concurrent callers spread out while the delay still
   * grows. `none`: exactly d, for schedules that must be predictable (operation retries, polls).
   */
  jitter?: "equal" | "none";
  /** Returns a number in [0, 1); injectable so tests are deterministic. */
  random?: () => number;
}

/**
 * Delay before retry number `attempt` (1-based): `d = min(maxMs, baseMs * factor^(attempt-1))`, then jitter.
 * Always a whole number of milliseconds from 0 to `maxMs`.
 */
export function backoffDelay(
  attempt: number,
  { baseMs, maxMs, factor = 2, jitter = "equal", random = Math.random }: BackoffOptions,
): number {
  const exponent = Math.max(0, Math.min(attempt - 1, 60));
  const delay = Math.max(0, Math.min(maxMs, baseMs * factor ** exponent));
  if (jitter === "none") return Math.round(delay);
  const half = delay / 2;
  return Math.round(half + random() * half);
}

/** Bounds for retrying one remote call (429, 5xx, dropped connections). */
export interface RetryPolicy {
  /** Sends per call, the first included. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** No retry is started once this much time has passed since the first attempt. */
  maxElapsedMs: number;
}

/**
 * One call's retries under a RetryPolicy: counts attempts and elapsed time, and answers how long to wait before the
 * next attempt (the Retry-After the other side asked for, else `backoffDelay`), or null to give up.
 */
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
    const delay =
      retryAfterMs ??
      backoffDelay(this.attempt, {
        baseMs: this.policy.baseDelayMs,
        maxMs: this.policy.maxDelayMs,
        random: this.random,
      });
    if (this.now() - this.started + delay > this.policy.maxElapsedMs) return null;
    return delay;
  }
}

/** Parses Retry-After (delta seconds or an HTTP date) into milliseconds; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | string[] | undefined, now: number): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (!raw) return undefined;
  if (/^\d+(\.\d+)?$/.test(raw.trim())) return Math.round(Number(raw) * 1000);
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

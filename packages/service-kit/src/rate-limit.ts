/**
 * Per-credential rate limits, in memory, per process: one {@link RateLimiter} per budget (`api`, `agent`, ...), each
 * keeping one number per credential key (GCRA, the generic cell rate algorithm: the key's "theoretical arrival time").
 * A budget of N a minute lets a credential spend all N at once and then one more every 60/N seconds, exactly a token
 * bucket of N refilled evenly over the minute, at O(1) per request and one Map entry per recently active key.
 *
 * The answers carry the IETF fields of draft-ietf-httpapi-ratelimit-headers (the structured form used since draft 08,
 * current in draft 10): `RateLimit-Policy: "api";q=600;w=60` (the budget) and `RateLimit: "api";r=12;t=48` (what is
 * left, and the seconds until the quota is whole again); a refusal adds `Retry-After`, the seconds until the next
 * request would be accepted, and is the `rate_limited` error (429).
 */
import { DomainError } from "@molecule/contracts";
import type { Counter } from "prom-client";
import type { ServiceMetrics } from "./metrics.ts";

/** The window every budget is counted over; a budget is set per minute. */
export const RATE_WINDOW_MS = 60_000;

/** Keys kept per budget unless told otherwise: enough for every agent token of a large tenant, bounded. */
export const DEFAULT_RATE_LIMIT_MAX_KEYS = 100_000;

export interface RateLimiterOptions {
  /** Milliseconds; the service's clock (tests move it). A reading behind the last one is tolerated (see `take`). */
  now: () => number;
  /** Keys kept at most; past it idle keys are dropped, then the oldest (which start again with a whole budget). */
  maxKeys?: number;
  /** Called once per refused request (the metrics counter). */
  onLimited?: () => void;
}

/** What one request was given: `allowed`, what is `remaining`, and the whole seconds in the headers. */
export interface RateDecision {
  allowed: boolean;
  remaining: number;
  /** Seconds until the budget is whole again (`t`). */
  resetSeconds: number;
  /** Seconds until one more request would be accepted (`Retry-After`); 0 when allowed. */
  retryAfterSeconds: number;
}

export class RateLimiter {
  /** The `RateLimit-Policy` value, built once. */
  readonly policy: string;
  private readonly interval: number;
  private readonly arrivals = new Map<string, number>();
  private readonly maxKeys: number;

  /** `perMinute` 0 turns the budget off: `take` answers null and nothing is kept. */
  constructor(
    readonly name: string,
    readonly perMinute: number,
    private readonly options: RateLimiterOptions,
  ) {
    if (!/^[a-z][a-z0-9_-]*$/.test(name)) throw new Error(`rate limit budget name ${JSON.stringify(name)}`);
    if (!Number.isInteger(perMinute) || perMinute < 0)
      throw new Error(`${name}: perMinute must be a whole number`);
    this.interval = perMinute > 0 ? RATE_WINDOW_MS / perMinute : 0;
    this.maxKeys = Math.max(1, options.maxKeys ?? DEFAULT_RATE_LIMIT_MAX_KEYS);
    this.policy = `"${name}";q=${perMinute};w=${RATE_WINDOW_MS / 1000}`;
  }

  get enabled(): boolean {
    return this.perMinute > 0;
  }

  /** How many keys are held now (bounded by `maxKeys`). */
  get size(): number {
    return this.arrivals.size;
  }

  /**
   * Counts one request for `key` (a credential's identity: never the secret itself). Null when the budget is off.
   * A key whose arrival time lies more than a window ahead can only come from a clock that went back: it starts
   * afresh rather than being refused until the clock catches up.
   */
  take(key: string): RateDecision | null {
    if (this.interval === 0) return null;
    const now = this.options.now();
    let arrival = this.arrivals.get(key);
    if (arrival === undefined) {
      if (this.arrivals.size >= this.maxKeys) this.evict(now);
      arrival = now;
    } else if (arrival < now || arrival - now > RATE_WINDOW_MS) {
      arrival = now;
    }
    const next = arrival + this.interval;
    // A millisecond's thousandth of slack: N intervals of 60000/N must fit the window despite rounding.
    if (next - now > RATE_WINDOW_MS + 1e-6) {
      this.options.onLimited?.();
      return {
        allowed: false,
        remaining: 0,
        resetSeconds: Math.ceil((arrival - now) / 1000),
        retryAfterSeconds: Math.max(1, Math.ceil((next - RATE_WINDOW_MS - now) / 1000)),
      };
    }
    this.arrivals.set(key, next);
    return {
      allowed: true,
      remaining: Math.floor((RATE_WINDOW_MS - (next - now)) / this.interval + 1e-9),
      resetSeconds: Math.ceil((next - now) / 1000),
      retryAfterSeconds: 0,
    };
  }

  /**
   * Counts one request for `key` and answers for it: the `RateLimit-Policy` and `RateLimit` fields are set through
   * `setHeader` either way; over the budget, `Retry-After` too, and the `rate_limited` error is thrown (the error
   * paths keep headers already set). Nothing happens when the budget is off.
   */
  enforce(key: string, setHeader: (name: string, value: string) => void): void {
    const decision = this.take(key);
    if (!decision) return;
    setHeader("ratelimit-policy", this.policy);
    setHeader("ratelimit", `"${this.name}";r=${decision.remaining};t=${decision.resetSeconds}`);
    if (decision.allowed) return;
    setHeader("retry-after", String(decision.retryAfterSeconds));
    throw new DomainError(
      "rate_limited",
      `rate limit exceeded: the ${this.name} budget is ${this.perMinute} requests a minute per credential; retry in ${decision.retryAfterSeconds} s`,
      { budget: this.name, retry_after_seconds: decision.retryAfterSeconds },
    );
  }

  /**
   * Makes room for a new key: idle keys first (their budget is whole, so forgetting them changes nothing), then, if
   * every key is active, the oldest tenth, so the scan runs once per many insertions rather than on every one.
   */
  private evict(now: number): void {
    for (const [key, arrival] of this.arrivals) if (arrival <= now) this.arrivals.delete(key);
    if (this.arrivals.size < this.maxKeys) return;
    let excess = this.arrivals.size - Math.floor(this.maxKeys * 0.9);
    for (const key of this.arrivals.keys()) {
      if (excess-- <= 0) break;
      this.arrivals.delete(key);
    }
  }
}

const LIMITED_SERIES = "molecule_rate_limited_total";

/**
 * One limiter per budget (requests a minute per credential, 0 for none), all counting their refusals in
 * `molecule_rate_limited_total{budget}` on `metrics` (the one series, when an app is built twice over one registry).
 */
export function createRateLimiters<Budget extends string>(
  budgets: Readonly<Record<Budget, number>>,
  options: { now: () => number; maxKeys?: number; metrics?: ServiceMetrics },
): Record<Budget, RateLimiter> {
  const metrics = options.metrics;
  const limited = metrics
    ? ((metrics.registry.getSingleMetric(LIMITED_SERIES) as Counter<"budget"> | undefined) ??
      metrics.counter(
        LIMITED_SERIES,
        "Requests refused with 429 because their credential was over its budget, by budget",
        ["budget"],
      ))
    : undefined;
  const limiters = {} as Record<Budget, RateLimiter>;
  for (const name of Object.keys(budgets) as Budget[]) {
    const counted = limited?.labels(name);
    if (counted) counted.inc(0); // the series exists from the start, at zero
    limiters[name] = new RateLimiter(name, budgets[name], {
      now: options.now,
      ...(options.maxKeys === undefined ? {} : { maxKeys: options.maxKeys }),
      ...(counted ? { onLimited: () => counted.inc() } : {}),
    });
  }
  return limiters;
}

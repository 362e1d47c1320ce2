import { createRateLimiters, type RateLimiter } from "@molecule/service-kit/rate-limit";
import type { PlatformDeps, PlatformRateLimits } from "../services/deps.ts";

/**
 * Requests a minute per credential, generous enough that no client the platform ships is ever refused: an agent
 * heartbeats every 30 s (600 leaves room for a 100 ms interval), and the API and the A2A proxy serve automation.
 */
export const DEFAULT_RATE_LIMITS: PlatformRateLimits = { api: 3000, agent: 600, a2a: 6000, maxKeys: 100_000 };

/** One limiter per budget, each per credential, separate so no budget's traffic can use up another's. */
export type PlatformLimiters = Record<"api" | "agent" | "a2a", RateLimiter>;

/** The platform's limiters, on its clock, counting refusals in its metrics. */
export function platformLimiters(deps: PlatformDeps): PlatformLimiters {
  const { maxKeys, ...budgets } = deps.settings.rateLimits ?? DEFAULT_RATE_LIMITS;
  return createRateLimiters(budgets, {
    now: () => deps.clock.now().getTime(),
    maxKeys,
    metrics: deps.metrics,
  });
}

import { createRateLimiters, type RateLimiter } from "@molecule/service-kit/rate-limit";
import type { ControlPlaneDeps, ControlPlaneRateLimits } from "../services/deps.ts";

/**
 * Requests a minute per credential. A tenant's provisioner polls its operations (twice a second each while they run),
 * so the tenant budget leaves room for many at once; the client honours `Retry-After` when it is met.
 */
export const DEFAULT_RATE_LIMITS: ControlPlaneRateLimits = { admin: 3000, tenant: 3000, maxKeys: 100_000 };

/** One limiter per budget, each per credential, separate so tenants never use up the operator's budget. */
export type ControlPlaneLimiters = Record<"admin" | "tenant", RateLimiter>;

/** The control plane's limiters, on its clock, counting refusals in its metrics. */
export function controlPlaneLimiters(deps: ControlPlaneDeps): ControlPlaneLimiters {
  const { maxKeys, ...budgets } = deps.settings.rateLimits ?? DEFAULT_RATE_LIMITS;
  return createRateLimiters(budgets, {
    now: () => deps.clock.now().getTime(),
    maxKeys,
    metrics: deps.metrics,
  });
}

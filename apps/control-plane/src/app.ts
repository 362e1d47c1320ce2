import { ORG_OPERATION_KINDS } from "@molecule/contracts";
import { handleError, limitBody, notFound, requestLog } from "@molecule/service-kit/http";
import { metricsHandler } from "@molecule/service-kit/metrics";
import { openApiRoutes } from "@molecule/service-kit/openapi";
import type { Reconciler } from "@molecule/service-kit/reconcile";
import { Hono } from "hono";
import { controlPlaneOpenApi } from "./api.ts";
import { requireAdmin, requireTenant } from "./http/auth.ts";
import { controlPlaneLimiters } from "./http/rate-limits.ts";
import type { AppEnv } from "./http/types.ts";
import { adminRoutes } from "./routes/admin.ts";
import { orgRoutes } from "./routes/orgs.ts";
import { rolloutRoutes } from "./routes/rollouts.ts";
import { tenantRoutes } from "./routes/tenant.ts";
import type { ControlPlaneDeps } from "./services/deps.ts";
import { orgOperationFailed, performOrgOperation } from "./services/org-operations.ts";
import { OrgService } from "./services/orgs.ts";
import { createControlPlaneReconciler } from "./services/reconcile.ts";
import { RolloutService } from "./services/rollouts.ts";
import { OperationRunner } from "./services/runner.ts";
import { TenantLifecycleService } from "./services/tenant-lifecycle.ts";
import { performTenantLifecycle } from "./services/tenant-operations.ts";
import { performWorkspaceOperation, workspaceOperationFailed } from "./services/workspace-operations.ts";
import { WorkspaceService } from "./services/workspaces.ts";

export { controlPlaneOpenApi } from "./api.ts";
export type { ControlPlaneDeps, ControlPlaneSettings } from "./services/deps.ts";
export { systemClock } from "./services/deps.ts";
export { createRolloutRunner } from "./services/runner.ts";

export interface AppHooks {
  /** Called when a request queued an operation, so the runner starts it at once. */
  onOperationQueued?: () => void;
  /** Called when a rollout was queued, so the rollout runner starts it at once. */
  onRolloutQueued?: () => void;
  /** The reconciler `main()` runs on its interval; the admin routes run it on demand (one is made if absent). */
  reconciler?: Reconciler;
}

/** The control plane's operation runner: org operations go to the tenant backend, the rest to the workspace backend. */
export function createOperationRunner(deps: ControlPlaneDeps, instanceId: string, pollIntervalMs?: number) {
  const isOrg = (kind: string) => (ORG_OPERATION_KINDS as readonly string[]).includes(kind);
  const isLifecycle = (kind: string) =>
    kind === "stop_tenant" || kind === "start_tenant" || kind === "redeploy_tenant";
  return new OperationRunner(
    deps,
    instanceId,
    (operation, step, scrub, attempt) =>
      isLifecycle(operation.kind)
        ? performTenantLifecycle(deps, operation, step, scrub, attempt)
        : isOrg(operation.kind)
          ? performOrgOperation(deps, operation, step, scrub, attempt)
          : performWorkspaceOperation(deps, operation, step, scrub, attempt),
    (operation, error) =>
      isOrg(operation.kind)
        ? orgOperationFailed(deps, operation, error)
        : workspaceOperationFailed(deps, operation, error),
    pollIntervalMs,
  );
}

export function createApp(deps: ControlPlaneDeps, hooks: AppHooks = {}) {
  const orgs = new OrgService(deps, hooks.onOperationQueued);
  const workspaces = new WorkspaceService(deps, hooks.onOperationQueued);
  const lifecycle = new TenantLifecycleService(deps, hooks.onOperationQueued);

  const app = new Hono<AppEnv>();

  app.use("*", requestLog(deps.logger, { metrics: deps.metrics }));
  app.use("*", limitBody(deps.settings.maxBodyBytes));

  app.get("/health", (c) => c.json({ ok: true }));
  // Public: the API's description holds no secret.
  app.route("/", openApiRoutes<AppEnv>(controlPlaneOpenApi));
  // Budgets per credential: the operator's admin token and each tenant's credential, counted apart.
  const limiters = controlPlaneLimiters(deps);
  const admin = requireAdmin(deps, limiters.admin);
  app.get("/metrics", admin, metricsHandler(deps.metrics));

  // "/x/*" also matches "/x" itself, so each guard is registered once.
  app.use("/cp/orgs/*", admin);
  app.route("/cp/orgs", orgRoutes(orgs));
  app.use("/cp/admin/*", admin);
  app.route(
    "/cp/admin",
    adminRoutes(deps, hooks.reconciler ?? createControlPlaneReconciler(deps), lifecycle),
  );
  app.route("/cp/admin", rolloutRoutes(new RolloutService(deps, hooks.onRolloutQueued), deps.events));

  const tenant = requireTenant(deps, limiters.tenant);
  for (const prefix of ["/cp/workspaces", "/cp/operations", "/cp/tenants"]) app.use(`${prefix}/*`, tenant);
  app.route("/cp", tenantRoutes(deps, workspaces, orgs));

  app.notFound(notFound);
  app.onError(handleError);
  return app;
}

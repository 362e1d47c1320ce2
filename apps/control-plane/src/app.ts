import { randomBytes } from "node:crypto";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { requireAdmin, requireTenant } from "./http/auth.ts";
import { errorResponse, handleError } from "./http/errors.ts";
import type { AppEnv } from "./http/types.ts";
import { orgRoutes } from "./routes/orgs.ts";
import { tenantRoutes } from "./routes/tenant.ts";
import type { ControlPlaneDeps } from "./services/deps.ts";
import { orgOperationFailed, performOrgOperation } from "./services/org-operations.ts";
import { OrgService } from "./services/orgs.ts";
import { OperationRunner } from "./services/runner.ts";
import { performWorkspaceOperation, workspaceOperationFailed } from "./services/workspace-operations.ts";
import { WorkspaceService } from "./services/workspaces.ts";

export type { ControlPlaneDeps, ControlPlaneSettings } from "./services/deps.ts";
export { systemClock } from "./services/deps.ts";

export interface AppHooks {
  /** Called when a request queued an operation, so the runner starts it at once. */
  onOperationQueued?: () => void;
}

/** The control plane's operation runner: org operations go to the tenant backend, the rest to the workspace backend. */
export function createOperationRunner(deps: ControlPlaneDeps, instanceId: string, pollIntervalMs?: number) {
  const isOrg = (kind: string) => kind === "provision_tenant" || kind === "destroy_org";
  return new OperationRunner(
    deps,
    instanceId,
    (operation, step) =>
      isOrg(operation.kind)
        ? performOrgOperation(deps, operation, step)
        : performWorkspaceOperation(deps, operation, step),
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

  const app = new Hono<AppEnv>();

  app.use("*", async (c, next) => {
    const requestId = `req_${randomBytes(8).toString("hex")}`;
    const started = performance.now();
    c.set("requestId", requestId);
    c.set("logger", deps.logger.child({ requestId }));
    c.header("x-request-id", requestId);
    await next();
    deps.logger.info(
      {
        requestId,
        method: c.req.method,
        route: c.req.routePath,
        status: c.res.status,
        durationMs: Math.round((performance.now() - started) * 10) / 10,
      },
      "request",
    );
  });

  app.use(
    "*",
    bodyLimit({
      maxSize: deps.settings.maxBodyBytes,
      onError: (c) =>
        errorResponse(c as never, "payload_too_large", `body exceeds ${deps.settings.maxBodyBytes} bytes`),
    }),
  );

  app.get("/health", (c) => c.json({ ok: true }));

  // "/x/*" also matches "/x" itself, so each guard is registered once.
  app.use("/cp/orgs/*", requireAdmin(deps));
  app.route("/cp/orgs", orgRoutes(orgs));

  const tenant = requireTenant(deps);
  for (const prefix of ["/cp/workspaces", "/cp/operations", "/cp/tenants"]) app.use(`${prefix}/*`, tenant);
  app.route("/cp", tenantRoutes(workspaces, orgs));

  app.notFound((c) => errorResponse(c, "not_found", `no route for ${c.req.method} ${c.req.path}`));
  app.onError(handleError);
  return app;
}

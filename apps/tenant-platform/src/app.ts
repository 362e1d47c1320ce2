import type { ChangeFeed } from "@molecule/service-kit/cluster";
import { handleError, limitBody, notFound, type RawRoute, requestLog } from "@molecule/service-kit/http";
import { metricsHandler } from "@molecule/service-kit/metrics";
import { openApiRoutes } from "@molecule/service-kit/openapi";
import type { Reconciler } from "@molecule/service-kit/reconcile";
import { Hono } from "hono";
import { tenantOpenApi } from "./api.ts";

export { tenantOpenApi };

import { canvasRoutes } from "./canvas/routes.ts";
import { identify, requireAdmin } from "./http/auth.ts";
import { type PlatformLimiters, platformLimiters } from "./http/rate-limits.ts";
import type { AppEnv } from "./http/types.ts";
import { a2aRawRoute, a2aRoutes } from "./routes/a2a.ts";
import { adminRoutes } from "./routes/admin.ts";
import { eventRoutes } from "./routes/events.ts";
import { operationRoutes } from "./routes/operations.ts";
import { poolRoutes } from "./routes/pools.ts";
import { heartbeatRawRoute, heartbeatRoutes, registryRoutes } from "./routes/registry.ts";
import { workspaceRoutes } from "./routes/workspaces.ts";
import { A2AService } from "./services/a2a.ts";
import { cachedDirectory, databaseDirectory } from "./services/a2a-directory.ts";
import { ActivityTracker } from "./services/activity.ts";
import type { TenantBackups } from "./services/backups.ts";
import type { PlatformDeps } from "./services/deps.ts";
import type { HeartbeatBatcher } from "./services/heartbeats.ts";
import { IdleSuspender } from "./services/idle.ts";
import { instrumentPlatform } from "./services/metrics.ts";
import { PoolService } from "./services/pools.ts";
import { createTenantReconciler } from "./services/reconcile.ts";
import { RegistryService } from "./services/registry.ts";
import { SecretService } from "./services/secrets.ts";
import { WorkspaceWaker } from "./services/wake.ts";
import { WorkspaceService } from "./services/workspaces.ts";

export interface AppHooks {
  /** Called with the id of an operation a request queued (committed), so the runner starts it at once. */
  onOperationQueued?: (operationId: string) => void;
  /** The reconciler `main()` runs on its interval; the admin routes run it on demand (one is made if absent). */
  reconciler?: Reconciler;
  /** Database backups (TENANT_BACKUP_S3_PREFIX); absent, the backup routes answer 409. */
  backups?: TenantBackups;
  /** Steady-state heartbeats answered from memory and written in batches (`main()` runs its flush loop). */
  heartbeats?: HeartbeatBatcher;
  /**
   * The database's change feed (service-kit cluster): with it the A2A proxy answers callers' tokens and targets'
   * routes from memory that every replica's changes invalidate; without it, from the database on every call.
   */
  changes?: ChangeFeed;
  /**
   * Where A2A messages and reported activity are recorded (`main()` runs its flush loop); one is made if absent,
   * written only by the idle sweep's flush.
   */
  activity?: ActivityTracker;
  /** A pool's target changed or a member was claimed: `main()` wakes the pool filler. */
  onPoolChanged?: () => void;
}

/**
 * The platform's HTTP surface: the Hono app, and the raw routes served in front of it on Node's request and response
 * (service-kit `frontDoor`) for the hottest paths. `main()` and the test platform serve both; `app.request()` reaches
 * the Hono app only.
 */

export function createPlatform(deps: PlatformDeps, hooks: AppHooks = {}) {
  const workspaces = new WorkspaceService(deps, hooks.onOperationQueued, hooks.onPoolChanged);
  const activity = hooks.activity ?? new ActivityTracker(deps, 1_000);
  const a2a = new A2AService(
    deps,
    hooks.changes ? cachedDirectory(deps, hooks.changes) : databaseDirectory(deps),
    new WorkspaceWaker(deps, workspaces, hooks.changes ?? null),
    activity,
  );
  const registry = new RegistryService(deps, hooks.heartbeats ?? null, activity);
  const pools = new PoolService(deps, hooks.onPoolChanged, hooks.changes ?? null);
  // One set of budgets for both ways a route is served, so a raw route and its Hono twin count against the same.
  const limiters = platformLimiters(deps);
  // The hottest routes (A2A, and heartbeats from every agent) are served raw, answering as their Hono routes.
  const rawRoutes: RawRoute[] = [
    a2aRawRoute(deps, a2a, limiters.a2a),
    heartbeatRawRoute(deps, registry, limiters.agent),
  ];
  const reconciler = hooks.reconciler ?? createTenantReconciler(deps);
  instrumentPlatform(deps.metrics, deps, { reconciler, heartbeats: hooks.heartbeats ?? null, pools });
  return {
    app: createHonoApp(deps, hooks, workspaces, a2a, registry, pools, reconciler, limiters),
    rawRoutes,
    /** The idle sweep (`main()` runs it on the status sweep's interval). */
    idle: new IdleSuspender(deps, workspaces, activity),
    activity,
    close: () => a2a.close(),
  };
}

/** The Hono app alone, for tests that call it in process. */
export function createApp(deps: PlatformDeps, hooks: AppHooks = {}) {
  return createPlatform(deps, hooks).app;
}

function createHonoApp(
  deps: PlatformDeps,
  hooks: AppHooks,
  workspaces: WorkspaceService,
  a2a: A2AService,
  registry: RegistryService,
  pools: PoolService,
  reconciler: Reconciler,
  limiters: PlatformLimiters,
) {
  const secrets = new SecretService(deps);

  const app = new Hono<AppEnv>();

  // Heartbeats come every 30 s from every agent: a successful one is logged at debug. Status changes and missed
  // heartbeats are events (`GET /events`); a refused heartbeat is still logged at info.
  app.use("*", requestLog(deps.logger, { debugRoutes: ["POST /registry/heartbeat"], metrics: deps.metrics }));

  // The A2A proxy has its own body limit and auth, so it is mounted before the global ones.
  app.route("/", a2aRoutes(deps, a2a, limiters));

  app.use("*", limitBody(deps.settings.maxBodyBytes));

  app.get("/health", (c) => c.json({ ok: true }));
  // Public: the API's description holds no secret.
  app.route("/", openApiRoutes<AppEnv>(tenantOpenApi));
  // The canvas page and its assets are public; it calls the API below with the admin token like any client.
  app.route("/", canvasRoutes());

  // Heartbeats check their token in the statement that records them, so they are mounted before `identify`; they,
  // registration and a pool member's wait for its claim count in the `agent` budget, not the API's (`identify` counts
  // the rest in `api`).
  app.route("/registry", heartbeatRoutes(deps, registry, limiters.agent));
  app.route("/registry", registryRoutes(deps, registry, pools, limiters.agent));

  app.use("*", identify(deps, limiters.api));
  app.get("/metrics", requireAdmin(), metricsHandler(deps.metrics));
  app.route("/", eventRoutes(deps, workspaces));
  app.route("/workspaces", workspaceRoutes(workspaces, secrets));
  app.route("/operations", operationRoutes(workspaces));
  app.route("/pools", poolRoutes(pools));
  app.route("/admin", adminRoutes(deps, reconciler, hooks.backups ?? null, pools));

  app.notFound(notFound);
  app.onError(handleError);
  return app;
}

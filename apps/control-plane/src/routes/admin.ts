import type { Reconciler } from "@molecule/service-kit/reconcile";
import { Hono } from "hono";
import type { AppEnv } from "../http/types.ts";
import { backupsOverview } from "../services/backups.ts";
import type { ControlPlaneDeps } from "../services/deps.ts";
import { controlPlaneStats } from "../services/reconcile.ts";

/**
 * `POST /cp/admin/reconcile` (one pass now, answered with its report; 409 while another replica reconciles) and
 * `GET /cp/admin/stats`, `GET /cp/admin/backups` (the last backup of every tenant, stale and failed ones flagged).
 * Mounted behind the admin token.
 */
export function adminRoutes(deps: ControlPlaneDeps, reconciler: Reconciler) {
  const app = new Hono<AppEnv>();
  app.post("/reconcile", async (c) => c.json(await reconciler.run()));
  app.get("/stats", async (c) => c.json(await controlPlaneStats(deps, reconciler)));
  app.get("/backups", async (c) => c.json(await backupsOverview(deps, deps.settings.backups.staleAfterMs)));
  return app;
}

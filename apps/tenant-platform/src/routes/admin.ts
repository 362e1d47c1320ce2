import type { Reconciler } from "@molecule/service-kit/reconcile";
import { Hono } from "hono";
import { requireAdmin } from "../http/auth.ts";
import type { AppEnv } from "../http/types.ts";
import type { PlatformDeps } from "../services/deps.ts";
import { tenantStats } from "../services/reconcile.ts";

/** `POST /admin/reconcile` (one pass now, answered with its report; 409 while another replica reconciles), `GET /admin/stats`. */
export function adminRoutes(deps: PlatformDeps, reconciler: Reconciler) {
  const app = new Hono<AppEnv>();
  app.use("*", requireAdmin());
  app.post("/reconcile", async (c) => c.json(await reconciler.run()));
  app.get("/stats", async (c) => c.json(await tenantStats(deps, reconciler)));
  return app;
}

import {
  AmiRuntime,
  AwsRegionName,
  OrgSlug,
  PatchOrgBody,
  PutAmiPinBody,
  RedeployTenantBody,
} from "@molecule/contracts";
import { parseWith } from "@molecule/service-kit/http";
import type { Reconciler } from "@molecule/service-kit/reconcile";
import { type Context, Hono } from "hono";
import { parseJsonBytes, readBytes } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import { AmiPins } from "../services/ami.ts";
import { backupsOverview } from "../services/backups.ts";
import type { ControlPlaneDeps } from "../services/deps.ts";
import { controlPlaneStats } from "../services/reconcile.ts";
import type { TenantLifecycleService } from "../services/tenant-lifecycle.ts";

const slugParam = (c: Context) => parseWith(OrgSlug, c.req.param("slug"), "org slug");
const pinParams = (c: Context) => ({
  runtime: parseWith(AmiRuntime, c.req.param("runtime"), "runtime"),
  region: parseWith(AwsRegionName, c.req.param("region"), "region"),
});

/**
 * Mounted behind the admin token:
 * - `POST /cp/admin/reconcile` (one pass now, answered with its report; 409 while another replica reconciles) and
 *   `GET /cp/admin/stats`; `GET /cp/admin/backups` (the last backup of every tenant, stale and failed ones flagged);
 * - `POST /cp/admin/tenants/:slug/{stop,start,redeploy}` (202 with the queued org operation) and
 *   `PATCH /cp/admin/orgs/:slug` (`is_canary`);
 * - `GET /cp/admin/ami-pins`, `PUT` and `DELETE /cp/admin/ami-pins/:runtime/:region`.
 */
export function adminRoutes(
  deps: ControlPlaneDeps,
  reconciler: Reconciler,
  lifecycle: TenantLifecycleService,
) {
  const app = new Hono<AppEnv>();
  const pins = new AmiPins(deps.db, deps.clock);

  app.post("/reconcile", async (c) => c.json(await reconciler.run()));
  app.get("/stats", async (c) => c.json(await controlPlaneStats(deps, reconciler)));
  app.get("/backups", async (c) => c.json(await backupsOverview(deps, deps.settings.backups.staleAfterMs)));

  app.post("/tenants/:slug/stop", async (c) => c.json(await lifecycle.stop(slugParam(c)), 202));
  app.post("/tenants/:slug/start", async (c) => c.json(await lifecycle.start(slugParam(c)), 202));
  app.post("/tenants/:slug/redeploy", async (c) => {
    const slug = slugParam(c);
    const body = parseJsonBytes(await readBytes(c), RedeployTenantBody);
    return c.json(await lifecycle.redeploy(slug, body.image), 202);
  });

  app.patch("/orgs/:slug", async (c) => {
    const slug = slugParam(c);
    const body = parseJsonBytes(await readBytes(c), PatchOrgBody);
    return c.json(await lifecycle.setCanary(slug, body));
  });

  app.get("/ami-pins", async (c) => c.json({ pins: await pins.list() }));
  app.put("/ami-pins/:runtime/:region", async (c) => {
    const { runtime, region } = pinParams(c);
    const body = parseJsonBytes(await readBytes(c), PutAmiPinBody);
    return c.json({ pin: await pins.put(runtime, region, body.ami_id) });
  });
  app.delete("/ami-pins/:runtime/:region", async (c) => {
    const { runtime, region } = pinParams(c);
    await pins.delete(runtime, region);
    return c.body(null, 204);
  });

  return app;
}

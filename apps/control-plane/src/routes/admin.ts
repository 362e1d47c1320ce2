import {
  AdminStats,
  AmiPinAnswer,
  AmiPinList,
  AmiRuntime,
  AwsRegionName,
  BackupsOverview,
  OrgAnswer,
  OrgSlug,
  PatchOrgBody,
  PutAmiPinBody,
  ReconcileReport,
  RedeployTenantBody,
  TenantOperationAccepted,
} from "@molecule/contracts";
import { parseWith } from "@molecule/service-kit/http";
import type { ApiRoute } from "@molecule/service-kit/openapi";
import type { Reconciler } from "@molecule/service-kit/reconcile";
import { type Context, Hono } from "hono";
import { z } from "zod";
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

const SlugPath = z.object({ slug: OrgSlug });
const PinPath = z.object({ runtime: AmiRuntime, region: AwsRegionName });
const queued = { 202: { description: "The org operation is queued", schema: TenantOperationAccepted } };

export const adminApi: ApiRoute[] = [
  {
    method: "POST",
    path: "/cp/admin/reconcile",
    summary: "Reconcile now",
    description: "One pass comparing the database with the backends' resources, answered with its report.",
    tag: "admin",
    auth: ["admin"],
    responses: { 200: { description: "The pass's report", schema: ReconcileReport } },
    errors: [403, 409],
  },
  {
    method: "GET",
    path: "/cp/admin/stats",
    summary: "Operation and reconcile figures",
    tag: "admin",
    auth: ["admin"],
    responses: { 200: { description: "The figures", schema: AdminStats } },
    errors: [403],
  },
  {
    method: "GET",
    path: "/cp/admin/backups",
    summary: "Every tenant's last backup",
    tag: "admin",
    auth: ["admin"],
    responses: { 200: { description: "Stale and failed ones flagged", schema: BackupsOverview } },
    errors: [403],
  },
  ...(["stop", "start"] as const).map(
    (kind): ApiRoute => ({
      method: "POST",
      path: `/cp/admin/tenants/:slug/${kind}`,
      summary: `${kind === "stop" ? "Stop" : "Start"} an org's tenant`,
      tag: "tenants",
      auth: ["admin"],
      params: SlugPath,
      responses: queued,
      errors: [400, 403, 404, 409],
    }),
  ),
  {
    method: "POST",
    path: "/cp/admin/tenants/:slug/redeploy",
    summary: "Redeploy an org's tenant",
    description: "With the given image, or the configured one.",
    tag: "tenants",
    auth: ["admin"],
    params: SlugPath,
    body: RedeployTenantBody,
    responses: queued,
    errors: [400, 403, 404, 409],
  },
  {
    method: "PATCH",
    path: "/cp/admin/orgs/:slug",
    summary: "Mark an org as canary (or not)",
    tag: "orgs",
    auth: ["admin"],
    params: SlugPath,
    body: PatchOrgBody,
    responses: { 200: { description: "The org", schema: OrgAnswer } },
    errors: [400, 403, 404, 409],
  },
  {
    method: "GET",
    path: "/cp/admin/ami-pins",
    summary: "List AMI pins",
    tag: "ami-pins",
    auth: ["admin"],
    responses: { 200: { description: "Every pin", schema: AmiPinList } },
    errors: [403],
  },
  {
    method: "PUT",
    path: "/cp/admin/ami-pins/:runtime/:region",
    summary: "Pin a runtime's AMI in a region",
    tag: "ami-pins",
    auth: ["admin"],
    params: PinPath,
    body: PutAmiPinBody,
    responses: { 200: { description: "The pin", schema: AmiPinAnswer } },
    errors: [400, 403],
  },
  {
    method: "DELETE",
    path: "/cp/admin/ami-pins/:runtime/:region",
    summary: "Remove an AMI pin",
    tag: "ami-pins",
    auth: ["admin"],
    params: PinPath,
    responses: { 204: { description: "Removed (or there was none)", contentType: "text/plain" } },
    errors: [400, 403],
  },
];

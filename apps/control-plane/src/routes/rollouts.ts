import {
  FleetRedeployBody,
  idSchema,
  OrgSlug,
  RolloutAccepted,
  RolloutList,
  TenantRedeployBody,
} from "@molecule/contracts";
import type { EventBus } from "@molecule/service-kit/events";
import { parseWith, streamEvents } from "@molecule/service-kit/http";
import type { ApiRoute } from "@molecule/service-kit/openapi";
import { Hono } from "hono";
import { z } from "zod";
import { parseJsonBytes, readBytes } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import type { RolloutEventType } from "../services/rollout-events.ts";
import type { RolloutService } from "../services/rollouts.ts";

const RolloutId = idSchema("op");

/**
 * Workspace rollouts and the control plane's event stream (mounted under /cp/admin, behind the admin token):
 * `POST /tenants/:slug/workspaces/redeploy`, `POST /tenants/workspaces/redeploy-fleet` (202 with the queued
 * rollout, or 200 with the plan for `dry_run`), `GET /rollouts`, `GET /rollouts/:id`, `POST /rollouts/:id/cancel`
 * and `GET /events` (server-sent events).
 */
export function rolloutRoutes(
  rollouts: RolloutService,
  events: EventBus<RolloutEventType>,
  keepaliveMs?: number,
) {
  const app = new Hono<AppEnv>();

  app.post("/tenants/workspaces/redeploy-fleet", async (c) => {
    const body = parseJsonBytes(await readBytes(c), FleetRedeployBody);
    const { rollout, queued } = await rollouts.fleet(body);
    return c.json({ rollout }, queued ? 202 : 200);
  });

  app.post("/tenants/:slug/workspaces/redeploy", async (c) => {
    const slug = parseWith(OrgSlug, c.req.param("slug"), "org slug");
    const body = parseJsonBytes(await readBytes(c), TenantRedeployBody);
    const { rollout, queued } = await rollouts.tenant(slug, body.dry_run);
    return c.json({ rollout }, queued ? 202 : 200);
  });

  app.get("/rollouts", async (c) => c.json({ rollouts: await rollouts.list() }));

  app.get("/rollouts/:id", async (c) =>
    c.json({
      rollout: await rollouts.get(parseWith(RolloutId, c.req.param("id"), "rollout id in the path")),
    }),
  );

  app.post("/rollouts/:id/cancel", async (c) => {
    const id = parseWith(RolloutId, c.req.param("id"), "rollout id in the path");
    return c.json({ rollout: await rollouts.cancel(id) }, 202);
  });

  app.get("/events", (c) => streamEvents(c, events, {}, keepaliveMs));

  return app;
}

const RolloutPath = z.object({ id: RolloutId });
const planned = {
  200: { description: "The plan (dry_run): nothing was queued", schema: RolloutAccepted },
  202: { description: "The rollout is queued", schema: RolloutAccepted },
};

export const rolloutApi: ApiRoute[] = [
  {
    method: "POST",
    path: "/cp/admin/tenants/workspaces/redeploy-fleet",
    summary: "Redeploy every tenant's workspaces",
    description: "Canary tenants first, then the rest in waves; stops at the failure threshold.",
    tag: "rollouts",
    auth: ["admin"],
    body: FleetRedeployBody,
    responses: planned,
    errors: [400, 403, 409],
  },
  {
    method: "POST",
    path: "/cp/admin/tenants/:slug/workspaces/redeploy",
    summary: "Redeploy one tenant's workspaces",
    tag: "rollouts",
    auth: ["admin"],
    params: z.object({ slug: OrgSlug }),
    body: TenantRedeployBody,
    responses: planned,
    errors: [400, 403, 404, 409],
  },
  {
    method: "GET",
    path: "/cp/admin/rollouts",
    summary: "List rollouts",
    tag: "rollouts",
    auth: ["admin"],
    responses: { 200: { description: "Newest first", schema: RolloutList } },
    errors: [403],
  },
  {
    method: "GET",
    path: "/cp/admin/rollouts/:id",
    summary: "Get a rollout",
    tag: "rollouts",
    auth: ["admin"],
    params: RolloutPath,
    responses: { 200: { description: "The rollout, by tenant and workspace", schema: RolloutAccepted } },
    errors: [400, 403, 404],
  },
  {
    method: "POST",
    path: "/cp/admin/rollouts/:id/cancel",
    summary: "Cancel a rollout",
    tag: "rollouts",
    auth: ["admin"],
    params: RolloutPath,
    responses: { 202: { description: "Its cancellation is recorded", schema: RolloutAccepted } },
    errors: [400, 403, 404, 409],
  },
  {
    method: "GET",
    path: "/cp/admin/events",
    summary: "Rollout events, live",
    tag: "rollouts",
    auth: ["admin"],
    responses: {
      200: { description: "Server-sent events (see docs/api.md)", contentType: "text/event-stream" },
    },
    errors: [403],
  },
];

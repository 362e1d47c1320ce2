import { FleetRedeployBody, idSchema, OrgSlug, TenantRedeployBody } from "@molecule/contracts";
import type { EventBus } from "@molecule/service-kit/events";
import { parseWith, streamEvents } from "@molecule/service-kit/http";
import { Hono } from "hono";
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

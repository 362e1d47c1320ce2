import { BootEventBody, CpProvisionBody, CpStartBody, DomainError } from "@molecule/contracts";
import { Hono } from "hono";
import { idempotencyKey, parseJsonBytes } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import type { OrgService } from "../services/orgs.ts";
import type { WorkspaceService } from "../services/workspaces.ts";

/** Routes a tenant calls with its signed credential (mounted behind requireTenant). */
export function tenantRoutes(workspaces: WorkspaceService, orgs: OrgService) {
  const app = new Hono<AppEnv>();

  app.post("/workspaces/provision", async (c) => {
    const body = c.get("rawBody");
    const spec = parseJsonBytes(body, CpProvisionBody);
    const key = idempotencyKey(c, true) as string;
    const operation = await workspaces.request(c.get("tenant"), {
      kind: "provision",
      workspaceId: spec.workspace_id,
      key,
      body,
      input: { spec },
    });
    return c.json({ operation }, 202);
  });

  app.post("/workspaces/:id/start", async (c) => {
    const body = c.get("rawBody");
    const parsed = parseJsonBytes(body, CpStartBody);
    const workspaceId = c.req.param("id");
    if (parsed.spec.workspace_id !== workspaceId) {
      throw new DomainError("bad_request", "spec.workspace_id must match the workspace id in the path");
    }
    const key = idempotencyKey(c, true) as string;
    const operation = await workspaces.request(c.get("tenant"), {
      kind: "start",
      workspaceId,
      key,
      body,
      input: { spec: parsed.spec, recreate: parsed.recreate },
    });
    return c.json({ operation }, 202);
  });

  for (const kind of ["stop", "suspend"] as const) {
    app.post(`/workspaces/:id/${kind}`, async (c) => {
      const key = idempotencyKey(c, true) as string;
      const operation = await workspaces.request(c.get("tenant"), {
        kind,
        workspaceId: c.req.param("id"),
        key,
        body: c.get("rawBody"),
      });
      return c.json({ operation }, 202);
    });
  }

  app.delete("/workspaces/:id", async (c) => {
    const key = idempotencyKey(c, true) as string;
    const operation = await workspaces.request(c.get("tenant"), {
      kind: "destroy",
      workspaceId: c.req.param("id"),
      key,
      body: c.get("rawBody"),
    });
    return c.json({ operation }, 202);
  });

  app.get("/workspaces/:id/status", async (c) =>
    c.json(await workspaces.status(c.get("tenant"), c.req.param("id"))),
  );

  app.get("/workspaces", async (c) => c.json({ workspaces: await workspaces.list(c.get("tenant")) }));

  app.get("/operations/:id", async (c) =>
    c.json(await workspaces.operation(c.get("tenant"), c.req.param("id"))),
  );

  app.get("/tenants/config", async (c) => {
    const tenant = c.get("tenant");
    return c.json(await orgs.runtimeConfig(tenant.orgId, tenant.slug));
  });

  app.post("/tenants/boot-event", async (c) => {
    const event = parseJsonBytes(c.get("rawBody"), BootEventBody);
    await orgs.recordBootEvent(c.get("tenant").orgId, event);
    return c.body(null, 204);
  });

  return app;
}

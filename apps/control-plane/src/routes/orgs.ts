import { CreateOrgBody, DeleteOrgBody } from "@molecule/contracts";
import { Hono } from "hono";
import { idempotencyKey, parseJsonBytes, readBytes } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import type { OrgService } from "../services/orgs.ts";

/** Admin routes (mounted behind requireAdmin). */
export function orgRoutes(orgs: OrgService) {
  const app = new Hono<AppEnv>();

  app.post("/", async (c) => {
    const body = parseJsonBytes(await readBytes(c), CreateOrgBody);
    return c.json(await orgs.create(body, idempotencyKey(c, false)), 201);
  });

  app.get("/", async (c) => c.json({ orgs: await orgs.list() }));

  app.get("/:slug", async (c) => c.json(await orgs.get(c.req.param("slug"))));

  app.delete("/:slug", async (c) => {
    const body = parseJsonBytes(await readBytes(c), DeleteOrgBody);
    return c.json(await orgs.delete(c.req.param("slug"), body.confirm), 202);
  });

  return app;
}

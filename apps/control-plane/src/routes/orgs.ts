import { CreateOrgBody, DeleteOrgBody, OrgSlug } from "@molecule/contracts";
import { parseWith } from "@molecule/service-kit/http";
import { Hono } from "hono";
import { idempotencyKey, parseJsonBytes, readBytes } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import type { OrgService } from "../services/orgs.ts";

/** The slug in the path, checked before it reaches a query: anything that cannot be a slug is a 400. */
function slugParam(raw: string): string {
  return parseWith(OrgSlug, raw, "org slug");
}

/** Admin routes (mounted behind requireAdmin). */
export function orgRoutes(orgs: OrgService) {
  const app = new Hono<AppEnv>();

  app.post("/", async (c) => {
    const body = parseJsonBytes(await readBytes(c), CreateOrgBody);
    return c.json(await orgs.create(body, idempotencyKey(c, false)), 201);
  });

  app.get("/", async (c) => c.json({ orgs: await orgs.list() }));

  app.get("/:slug", async (c) => c.json(await orgs.get(slugParam(c.req.param("slug")))));

  app.delete("/:slug", async (c) => {
    const slug = slugParam(c.req.param("slug"));
    const body = parseJsonBytes(await readBytes(c), DeleteOrgBody);
    return c.json(await orgs.delete(slug, body.confirm), 202);
  });

  return app;
}

import {
  CpOrgPoolList,
  CreatedOrg,
  CreateOrgBody,
  DeletedOrg,
  DeleteOrgBody,
  OrgDetail,
  OrgList,
  OrgSlug,
  PoolView,
  PutPoolBody,
} from "@molecule/contracts";
import { parseWith } from "@molecule/service-kit/http";
import type { ApiRoute } from "@molecule/service-kit/openapi";
import { Hono } from "hono";
import { z } from "zod";
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

  app.get("/:slug/pools", async (c) => c.json(await orgs.pools(slugParam(c.req.param("slug")))));

  app.put("/:slug/pools", async (c) => {
    const slug = slugParam(c.req.param("slug"));
    const body = parseJsonBytes(await readBytes(c), PutPoolBody);
    return c.json(await orgs.setPool(slug, body));
  });

  app.delete("/:slug", async (c) => {
    const slug = slugParam(c.req.param("slug"));
    const body = parseJsonBytes(await readBytes(c), DeleteOrgBody);
    return c.json(await orgs.delete(slug, body.confirm), 202);
  });

  return app;
}

const SlugPath = z.object({ slug: OrgSlug });

export const orgApi: ApiRoute[] = [
  {
    method: "POST",
    path: "/cp/orgs",
    summary: "Create an org",
    description: "Queues its tenant's provision; answers the tenant's credential once.",
    tag: "orgs",
    auth: ["admin"],
    headers: z.object({ "idempotency-key": z.string().max(200).optional() }),
    body: CreateOrgBody,
    responses: { 201: { description: "Created; its tenant's provision is queued", schema: CreatedOrg } },
    errors: [400, 403, 409, 413, 415],
  },
  {
    method: "GET",
    path: "/cp/orgs",
    summary: "List orgs",
    tag: "orgs",
    auth: ["admin"],
    responses: { 200: { description: "Every org", schema: OrgList } },
    errors: [403],
  },
  {
    method: "GET",
    path: "/cp/orgs/:slug",
    summary: "Get an org",
    tag: "orgs",
    auth: ["admin"],
    params: SlugPath,
    responses: { 200: { description: "The org, its tenant and its latest operations", schema: OrgDetail } },
    errors: [400, 403, 404],
  },
  {
    method: "GET",
    path: "/cp/orgs/:slug/pools",
    summary: "An org's warm pool members",
    description:
      "The pool members the org's tenant had this control plane make (its `PUT /pools` sets the targets), per pool: the unclaimed ones by state, and how many a create claimed whose workspace is not destroyed.",
    tag: "orgs",
    auth: ["admin"],
    params: SlugPath,
    responses: { 200: { description: "Its pools, as the control plane holds them", schema: CpOrgPoolList } },
    errors: [400, 403, 404],
  },
  {
    method: "PUT",
    path: "/cp/orgs/:slug/pools",
    summary: "Set one of an org's warm pools",
    description:
      "Sets the target size of the org's pool of `runtime` and `tier` through its tenant's own `PUT /pools` (size 0 drains it) and answers the tenant's view of that pool. The tenant keeps the pool and its claims; this control plane makes and destroys its members. The tenant's refusals keep their status and reason (400: a runtime it does not run; 409: a tier its backend cannot keep suspended); 409 also when the org is not ready; 502/503 when the tenant answers wrongly or not at all.",
    tag: "orgs",
    auth: ["admin"],
    params: SlugPath,
    body: PutPoolBody,
    responses: { 200: { description: "The pool as its tenant now holds it", schema: PoolView } },
    errors: [400, 403, 404, 409, 413, 415, 502, 503],
  },
  {
    method: "DELETE",
    path: "/cp/orgs/:slug",
    summary: "Delete an org",
    description: "The body repeats the slug to confirm; the tenant and its workspaces are torn down.",
    tag: "orgs",
    auth: ["admin"],
    params: SlugPath,
    body: DeleteOrgBody,
    responses: { 202: { description: "Its deletion is queued", schema: DeletedOrg } },
    errors: [400, 403, 404, 409],
  },
];

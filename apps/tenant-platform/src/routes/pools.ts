import { PoolList, PoolView, PutPoolBody } from "@molecule/contracts";
import type { ApiRoute } from "@molecule/service-kit/openapi";
import { Hono } from "hono";
import { requireAdmin } from "../http/auth.ts";
import { readJson } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import type { PoolService } from "../services/pools.ts";

/** `PUT /pools` (a pool's target size; 0 drains it) and `GET /pools` (every pool with its members counted): admin. */
export function poolRoutes(pools: PoolService) {
  const app = new Hono<AppEnv>();
  app.use("*", requireAdmin());
  app.put("/", async (c) => c.json(await pools.put(await readJson(c, PutPoolBody))));
  app.get("/", async (c) => c.json({ pools: await pools.list() }));
  return app;
}

export const poolApi: ApiRoute[] = [
  {
    method: "PUT",
    path: "/pools",
    summary: "Set a warm pool's size",
    description:
      "Members are started ahead of creates of that runtime and tier; size 0 drains the pool. On a SaaS tenant the control plane makes the members (suspended until a claim resumes them); 409 when its workspace backend cannot suspend that tier.",
    tag: "pools",
    auth: ["admin"],
    body: PutPoolBody,
    responses: { 200: { description: "The pool", schema: PoolView } },
    errors: [400, 403, 409, 413, 415],
  },
  {
    method: "GET",
    path: "/pools",
    summary: "List warm pools",
    tag: "pools",
    auth: ["admin"],
    responses: { 200: { description: "Every pool with its members counted", schema: PoolList } },
    errors: [403],
  },
];

import { PutPoolBody } from "@molecule/contracts";
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

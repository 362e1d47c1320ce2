import { DomainError, HeartbeatBody, RegisterBody } from "@molecule/contracts";
import { Hono } from "hono";
import { bearerToken } from "../http/auth.ts";
import { readJson } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import type { RegistryService } from "../services/registry.ts";

export function registryRoutes(registry: RegistryService) {
  const app = new Hono<AppEnv>();

  app.post("/register", async (c) => {
    const token = bearerToken(c.req.header("authorization"));
    if (!token) throw new DomainError("unauthorized", "registration needs a bearer token (the boot token)");
    const body = await readJson(c, RegisterBody);
    return c.json(await registry.register(token, c.get("caller")?.kind === "admin", body));
  });

  app.post("/heartbeat", async (c) => {
    const caller = c.get("caller");
    if (!caller) throw new DomainError("unauthorized", "heartbeats need the workspace's bearer token");
    const body = await readJson(c, HeartbeatBody);
    return c.json(await registry.heartbeat(caller, body));
  });

  return app;
}

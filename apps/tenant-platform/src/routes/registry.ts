import { DomainError, HeartbeatBody, RegisterBody } from "@molecule/contracts";
import { Hono } from "hono";
import { bearerToken } from "../http/auth.ts";
import { readJson } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import type { PlatformDeps } from "../services/deps.ts";
import type { RegistryService } from "../services/registry.ts";
import { credentialOf } from "../services/tokens.ts";

/** `POST /registry/register`; mounted behind `identify` (the admin may register an agent by hand). */
export function registryRoutes(registry: RegistryService) {
  const app = new Hono<AppEnv>();

  app.post("/register", async (c) => {
    const token = bearerToken(c.req.header("authorization"));
    if (!token) throw new DomainError("unauthorized", "registration needs a bearer token (the boot token)");
    const body = await readJson(c, RegisterBody);
    return c.json(await registry.register(token, c.get("caller")?.kind === "admin", body));
  });

  return app;
}

const NO_TOKEN = "heartbeats need the workspace's bearer token";

/**
 * `POST /registry/heartbeat`, mounted before `identify`: it checks its token itself, in the statement that records
 * the heartbeat, so the steady state is one round trip. The answers are those of every route: 401 before the body
 * is read when there is no token, and 401 rather than 400 for a bad body sent with an unknown token.
 */
export function heartbeatRoutes(deps: PlatformDeps, registry: RegistryService) {
  const app = new Hono<AppEnv>();

  app.post("/heartbeat", async (c) => {
    const credential = credentialOf(deps, bearerToken(c.req.header("authorization")));
    if (!credential) throw new DomainError("unauthorized", NO_TOKEN);
    let body: HeartbeatBody;
    try {
      body = await readJson(c, HeartbeatBody);
    } catch (error) {
      if (credential.kind === "token" && !(await registry.isCurrentToken(credential.tokenHash))) {
        throw new DomainError("unauthorized", NO_TOKEN);
      }
      throw error;
    }
    return c.json(await registry.heartbeat(credential, body));
  });

  return app;
}

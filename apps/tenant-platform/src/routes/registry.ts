import {
  AwaitClaimBody,
  ClaimAnswer,
  DomainError,
  HeartbeatBody,
  HeartbeatResponse,
  RegisterBody,
  RegisterResponse,
} from "@molecule/contracts";
import { type RawRoute, readBody, writeJson } from "@molecule/service-kit/http";
import type { ApiRoute } from "@molecule/service-kit/openapi";
import type { RateLimiter } from "@molecule/service-kit/rate-limit";
import { Hono } from "hono";
import { bearerToken } from "../http/auth.ts";
import { parseJsonText, parseWith, readJson } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import type { PlatformDeps } from "../services/deps.ts";
import type { PoolService } from "../services/pools.ts";
import type { RegistryService } from "../services/registry.ts";
import { credentialKey, credentialOf } from "../services/tokens.ts";

/**
 * `POST /registry/register` (the admin may register an agent by hand), and `POST /registry/claim` (a warm pool
 * member's agent waits there for its claim, with its pool token): both counted in the `agent` budget by the token
 * presented (a boot, pool or admin token); mounted before `identify`, so the API's budget is not spent on them.
 */
export function registryRoutes(
  deps: PlatformDeps,
  registry: RegistryService,
  pools: PoolService,
  limiter: RateLimiter,
) {
  const app = new Hono<AppEnv>();

  app.post("/claim", async (c) => {
    const token = bearerToken(c.req.header("authorization"));
    const credential = credentialOf(deps, token);
    if (!token || !credential)
      throw new DomainError("unauthorized", "waiting for a claim needs a bearer token (the pool token)");
    limiter.enforce(credentialKey(credential), (name, value) => c.header(name, value));
    const body = await readJson(c, AwaitClaimBody);
    return c.json(await pools.awaitClaim(token, body, c.req.raw.signal));
  });

  app.post("/register", async (c) => {
    const token = bearerToken(c.req.header("authorization"));
    const credential = credentialOf(deps, token);
    if (!token || !credential) {
      throw new DomainError("unauthorized", "registration needs a bearer token (the boot token)");
    }
    limiter.enforce(credentialKey(credential), (name, value) => c.header(name, value));
    const body = await readJson(c, RegisterBody);
    return c.json(await registry.register(token, credential.kind === "admin", body));
  });

  return app;
}

const NO_TOKEN = "heartbeats need the workspace's bearer token";

/** What a heartbeat needs of its request, however it was served. */
export interface HeartbeatRequest {
  authorization: string | undefined;
  contentType: string | undefined;
  /** The body's text, within the body limit (a longer one throws `payload_too_large`). */
  text(): Promise<string>;
  /** Sets a header of the answer, whether it succeeds or fails (the rate-limit fields). */
  setHeader(name: string, value: string): void;
}

/**
 * `POST /registry/heartbeat`, the same rules whichever way it is served: 401 before the body is read when there is
 * no token, 429 past the token's `agent` budget before anything else is done, and 401 rather than 400 (or 413, 415)
 * for a bad body sent with an unknown token. The token is checked in the statement that records the heartbeat, or by
 * memory for the steady state (`RegistryService.heartbeat`).
 */
export async function answerHeartbeat(
  deps: PlatformDeps,
  registry: RegistryService,
  limiter: RateLimiter,
  request: HeartbeatRequest,
) {
  const credential = credentialOf(deps, bearerToken(request.authorization));
  if (!credential) throw new DomainError("unauthorized", NO_TOKEN);
  limiter.enforce(credentialKey(credential), request.setHeader);
  let body: HeartbeatBody;
  try {
    parseJsonText(request.contentType, null); // the type is refused before the body is read
    body = parseWith(HeartbeatBody, parseJsonText(request.contentType, await request.text()), "body");
  } catch (error) {
    if (credential.kind === "token" && !(await registry.isCurrentToken(credential.tokenHash))) {
      throw new DomainError("unauthorized", NO_TOKEN);
    }
    throw error;
  }
  return registry.heartbeat(credential, body);
}

/**
 * The heartbeat as served: on Node's request and response in front of the Hono app (service-kit `frontDoor`, which
 * gives it the request id, the log line at debug when successful, and the error envelope), the body read straight
 * from the request within the body limit. No fetch `Request`, web stream or Hono context is built for it.
 */
export function heartbeatRawRoute(
  deps: PlatformDeps,
  registry: RegistryService,
  limiter: RateLimiter,
): RawRoute {
  const limit = deps.settings.maxBodyBytes;
  return {
    method: "POST",
    path: "/registry/heartbeat",
    quiet: true,
    handler: async (req, res) => {
      const answer = await answerHeartbeat(deps, registry, limiter, {
        authorization: req.headers.authorization,
        contentType: req.headers["content-type"],
        text: async () => (await readBody(req, res, limit, `body exceeds ${limit} bytes`)).toString("utf8"),
        setHeader: (name, value) => res.setHeader(name, value),
      });
      writeJson(res, 200, answer);
    },
  };
}

/** The heartbeat for `app.request()` (the Hono app alone); mounted before `identify`. */
export function heartbeatRoutes(deps: PlatformDeps, registry: RegistryService, limiter: RateLimiter) {
  const app = new Hono<AppEnv>();

  app.post("/heartbeat", async (c) =>
    c.json(
      await answerHeartbeat(deps, registry, limiter, {
        authorization: c.req.header("authorization"),
        contentType: c.req.header("content-type"),
        text: () => c.req.text(),
        setHeader: (name, value) => c.header(name, value),
      }),
    ),
  );

  return app;
}

export const registryApi: ApiRoute[] = [
  {
    method: "POST",
    path: "/registry/claim",
    summary: "Wait for a warm pool member's claim",
    description:
      "A long poll with the member's pool token: answers when a create claims the member, or when it times out.",
    tag: "pools",
    auth: ["poolToken"],
    body: AwaitClaimBody,
    responses: {
      200: { description: "Claimed (with what the agent needs), or not yet", schema: ClaimAnswer },
    },
    errors: [400, 403, 404, 413, 415],
  },
  {
    method: "POST",
    path: "/registry/register",
    summary: "Register an agent",
    description:
      "Spends the workspace's one-time boot token (or the admin's, by hand) and answers the workspace's bearer token.",
    tag: "registry",
    auth: ["bootToken", "admin"],
    body: RegisterBody,
    responses: { 200: { description: "Registered", schema: RegisterResponse } },
    errors: [400, 403, 404, 409, 413, 415],
  },
  {
    method: "POST",
    path: "/registry/heartbeat",
    summary: "Send a heartbeat",
    description:
      "Marks the workspace online (or degraded); silence beyond HEARTBEAT_STALE_AFTER marks it offline.",
    tag: "registry",
    auth: ["workspace", "admin"],
    body: HeartbeatBody,
    responses: { 200: { description: "Recorded", schema: HeartbeatResponse } },
    errors: [400, 403, 404, 409, 413, 415],
  },
];

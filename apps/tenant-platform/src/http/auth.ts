import { DomainError } from "@molecule/contracts";
import type { RateLimiter } from "@molecule/service-kit/rate-limit";
import type { MiddlewareHandler } from "hono";
import type { PlatformDeps } from "../services/deps.ts";
import { type Credential, credentialKey, credentialOf, workspaceForToken } from "../services/tokens.ts";
import type { AppEnv, Caller } from "./types.ts";

export function bearerToken(header: string | undefined): string | null {
  const match = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return match?.[1] ?? null;
}

/**
 * Who is calling: the admin, a workspace (by its bearer token), or nobody. Never fails open. `tokenOwner` finds the
 * workspace a token hash belongs to (the database by default; the A2A proxy passes its directory).
 */
export async function callerOf(
  deps: PlatformDeps,
  credential: Credential | null,
  tokenOwner: (tokenHash: string) => Promise<string | null> = (tokenHash) =>
    workspaceForToken(deps.db, tokenHash),
): Promise<Caller | null> {
  if (!credential) return null;
  if (credential.kind === "admin") return credential;
  const workspaceId = await tokenOwner(credential.tokenHash);
  return workspaceId ? { kind: "workspace", workspaceId, tokenHash: credential.tokenHash } : null;
}

/**
 * Sets the caller, after counting the request against `limiter` (the `api` budget) for the credential presented,
 * before any lookup: a credential over its budget costs no database work, whether or not it names anyone. A request
 * without a token is not counted (it costs nothing: routes refuse it, or are public and static).
 */
export function identify(deps: PlatformDeps, limiter: RateLimiter): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const credential = credentialOf(deps, bearerToken(c.req.header("authorization")));
    if (credential) limiter.enforce(credentialKey(credential), (name, value) => c.header(name, value));
    c.set("caller", await callerOf(deps, credential));
    await next();
  };
}

export function requireAdmin(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const caller = c.get("caller");
    if (!caller) throw new DomainError("unauthorized", "an admin bearer token is required");
    if (caller.kind !== "admin") throw new DomainError("forbidden", "this route needs the admin token");
    await next();
  };
}

/** The admin, or the workspace named in the path with its own token. */
export function requireWorkspaceOrAdmin(param = "id"): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const caller = c.get("caller");
    if (!caller) throw new DomainError("unauthorized", "a bearer token is required");
    if (caller.kind === "workspace" && caller.workspaceId !== c.req.param(param)) {
      throw new DomainError("forbidden", "a workspace token only reaches its own workspace");
    }
    await next();
  };
}

import { DomainError } from "@molecule/contracts";
import type { MiddlewareHandler } from "hono";
import type { PlatformDeps } from "../services/deps.ts";
import { credentialOf, workspaceForToken } from "../services/tokens.ts";
import type { AppEnv, Caller } from "./types.ts";

export function bearerToken(header: string | undefined): string | null {
  const match = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return match?.[1] ?? null;
}

/**
 * Who is calling: the admin, a workspace (by its bearer token), or nobody. Never fails open. `tokenOwner` finds the
 * workspace a token hash belongs to (the database by default; the A2A proxy passes its directory).
 */
export async function resolveCaller(
  deps: PlatformDeps,
  token: string | null,
  tokenOwner: (tokenHash: string) => Promise<string | null> = (tokenHash) =>
    workspaceForToken(deps.db, tokenHash),
): Promise<Caller | null> {
  const credential = credentialOf(deps, token);
  if (!credential) return null;
  if (credential.kind === "admin") return credential;
  const workspaceId = await tokenOwner(credential.tokenHash);
  return workspaceId ? { kind: "workspace", workspaceId, tokenHash: credential.tokenHash } : null;
}

export function identify(deps: PlatformDeps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    c.set("caller", await resolveCaller(deps, bearerToken(c.req.header("authorization"))));
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

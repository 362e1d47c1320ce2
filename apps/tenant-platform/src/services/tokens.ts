import { timingSafeEqual } from "node:crypto";
import { type Db, workspaceTokens } from "@molecule/db";
import { hashToken } from "@molecule/identity";
import { and, eq, sql } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";

/**
 * What a bearer token claims to be, decided without the database: the admin token, or some other token that only a
 * lookup of its hash can turn into a workspace (or nobody).
 */
export type Credential = { kind: "admin" } | { kind: "token"; tokenHash: string };

/**
 * What a credential is counted as by the rate limits: the admin, or its token's hash (never the token itself, and the
 * same whether or not the token turns out to belong to anyone).
 */
export function credentialKey(credential: Credential): string {
  return credential.kind === "admin" ? "admin" : credential.tokenHash;
}

/** The admin token's hash, computed once per configured value rather than on every request. */
let adminHash: { token: string; hash: Buffer } | null = null;

function adminTokenHash(token: string): Buffer {
  if (adminHash?.token !== token) adminHash = { token, hash: Buffer.from(hashToken(token), "hex") };
  return adminHash.hash;
}

/**
 * Null when there is no token. One SHA-256 per request: the presented token's hash is both what a workspace token is
 * looked up by and what is compared, in constant time, with the admin token's hash (equal-length digests, so the
 * comparison says nothing about the admin token's length or content).
 */
export function credentialOf(deps: PlatformDeps, token: string | null): Credential | null {
  if (!token) return null;
  const tokenHash = hashToken(token);
  const admin = deps.settings.adminToken;
  if (admin && timingSafeEqual(Buffer.from(tokenHash, "hex"), adminTokenHash(admin)))
    return { kind: "admin" };
  return { kind: "token", tokenHash };
}

/** The lookup runs on every authenticated request: its SQL is built once per database handle. */
const lookups = new WeakMap<Db, ReturnType<typeof prepareLookup>>();

function prepareLookup(db: Db) {
  return db
    .select({ workspaceId: workspaceTokens.workspaceId })
    .from(workspaceTokens)
    .where(and(eq(workspaceTokens.tokenHash, sql.placeholder("tokenHash")), eq(workspaceTokens.kind, "auth")))
    .prepare("workspace_token_lookup");
}

/**
 * The workspace whose current bearer token hashes to `tokenHash`, or null (unknown, rotated or revoked). Read from
 * the database every time, so a token revoked by any platform process stops working at once.
 */
export async function workspaceForToken(db: Db, tokenHash: string): Promise<string | null> {
  let lookup = lookups.get(db);
  if (!lookup) {
    lookup = prepareLookup(db);
    lookups.set(db, lookup);
  }
  const [row] = await lookup.execute({ tokenHash });
  return row?.workspaceId ?? null;
}

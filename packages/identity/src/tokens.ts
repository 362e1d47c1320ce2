/**
 * Bearer tokens and random keys: minted here and nowhere else, so every token format is decided once. Only
 * `node:crypto`: the agent SDK bundles this module alone.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * What a token is, by its prefix. A token is `<prefix>_<43 url-safe characters>` (32 random bytes):
 * - `mbt` a workspace's one-time boot (registration) token
 * - `mwt` a workspace's bearer token for its platform
 * - `mpt` a warm pool member's token, good only for waiting for its claim (`POST /registry/claim`)
 * - `mit` what a platform presents to a workspace's A2A server (the inbound token)
 * - `mat` a tenant platform's ADMIN_TOKEN
 * - `mct` a tenant's credential for the control plane
 * - `mca` the control plane's admin bearer (CP_ADMIN_API_TOKEN)
 */
export type TokenPrefix = "mbt" | "mpt" | "mwt" | "mit" | "mat" | "mct" | "mca";

/** A new bearer token: 32 random bytes, url-safe, with a prefix saying what it is. */
export function mintToken(prefix: TokenPrefix): string {
  return `${prefix}_${randomBytes(32).toString("base64url")}`;
}

/** 32 random bytes as 64 hex characters: an AES-256 key or an HMAC secret. */
export function mintHexKey(): string {
  return randomBytes(32).toString("hex");
}

/** What is stored of a token: the hex SHA-256 of its text. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/** Constant-time comparison of two secrets of any length (compares their digests). */
export function secretsEqual(a: string, b: string): boolean {
  return timingSafeEqual(createHash("sha256").update(a).digest(), createHash("sha256").update(b).digest());
}

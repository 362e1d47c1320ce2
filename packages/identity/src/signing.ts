/**
 * Request signing for tenant → control-plane calls (the headers and wire constants are contracts' `CP_HEADERS`,
 * `SIGNATURE_VERSION`, `SIGNATURE_WINDOW_SECONDS` and `NONCE_GRACE_MS`):
 *
 *   X-Molecule-Signature: v1=<hex HMAC-SHA256 of canonicalRequest(...) with the tenant's signing key>
 *
 * The tenant's signing key is derived from PROVISION_SHARED_SECRET and the org id (`deriveTenantSigningKey`), so a
 * tenant holds a key that signs for its own org only and never the control plane's master secret.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { NONCE_GRACE_MS, SIGNATURE_VERSION, SIGNATURE_WINDOW_SECONDS } from "@molecule/contracts";

/**
 * The one window rule, in milliseconds: a request signed at `timestampSeconds` (unix seconds) is accepted while the
 * receiver's clock is within `SIGNATURE_WINDOW_SECONDS` of it, either way. Both edges are inside.
 */
export function withinSignatureWindow(timestampSeconds: number, nowMs: number): boolean {
  return Math.abs(nowMs - timestampSeconds * 1000) <= SIGNATURE_WINDOW_SECONDS * 1000;
}

/**
 * Until when (unix milliseconds, inclusive) a nonce signed at `timestampSeconds` must be kept: the last millisecond
 * `withinSignatureWindow` accepts it, plus `NONCE_GRACE_MS`. A nonce is pruned only once `now` is past this.
 */
export function nonceKeptUntilMs(timestampSeconds: number): number {
  return (timestampSeconds + SIGNATURE_WINDOW_SECONDS) * 1000 + NONCE_GRACE_MS;
}

/** A fresh request nonce: 16 random bytes as hex. */
export function mintNonce(): string {
  return randomBytes(16).toString("hex");
}

export function sha256Hex(body: string | Uint8Array): string {
  return createHash("sha256").update(body).digest("hex");
}

export interface SignedRequest {
  method: string;
  path: string;
  timestamp: string;
  nonce: string;
  body: string | Uint8Array;
}

/** What is signed: method, path with query, timestamp, nonce and the SHA-256 of the exact body bytes. */
export function canonicalRequest(input: SignedRequest): string {
  return [input.method.toUpperCase(), input.path, input.timestamp, input.nonce, sha256Hex(input.body)].join(
    "\n",
  );
}

export function deriveTenantSigningKey(sharedSecret: string, orgId: string): string {
  return createHmac("sha256", sharedSecret).update(`molecule-tenant-signing:${orgId}`).digest("hex");
}

export function signRequest(key: string, input: SignedRequest): string {
  return `${SIGNATURE_VERSION}=${createHmac("sha256", key).update(canonicalRequest(input)).digest("hex")}`;
}

/** Constant-time comparison of a presented signature header against the expected one. */
export function signatureMatches(key: string, presented: string, input: SignedRequest): boolean {
  const expected = Buffer.from(signRequest(key, input));
  const actual = Buffer.from(presented);
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

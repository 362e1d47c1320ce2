import { CP_HEADERS, DomainError } from "@molecule/contracts";
import {
  deriveTenantSigningKey,
  hashToken,
  nonceKeptUntilMs,
  secretsEqual,
  signatureMatches,
  withinSignatureWindow,
} from "@molecule/identity";
import type { RateLimiter } from "@molecule/service-kit/rate-limit";
import { and, eq, inArray, lt } from "drizzle-orm";
import type { MiddlewareHandler } from "hono";
import { cpOrgs, cpRequestNonces, cpTenantCredentials } from "../db/schema.ts";
import type { ControlPlaneDeps } from "../services/deps.ts";
import { readBytes } from "./body.ts";
import type { AppEnv } from "./types.ts";

export function bearerToken(header: string | undefined): string | null {
  const match = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return match?.[1] ?? null;
}

/**
 * `Authorization: Bearer CP_ADMIN_API_TOKEN`, compared in constant time, then counted in the `admin` budget. No token
 * configured: every call refused.
 */
export function requireAdmin(deps: ControlPlaneDeps, limiter: RateLimiter): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const expected = deps.settings.adminToken;
    if (!expected) {
      throw new DomainError("unauthorized", "the admin API is disabled: CP_ADMIN_API_TOKEN is not set");
    }
    const presented = bearerToken(c.req.header("authorization"));
    if (!presented || !secretsEqual(presented, expected)) {
      throw new DomainError("unauthorized", "an admin bearer token is required");
    }
    limiter.enforce("admin", (name, value) => c.header(name, value));
    await next();
  };
}

const NONCE_PATTERN = /^[A-Za-z0-9._~+/=-]{8,200}$/;

const refuse = (why: string) => new DomainError("unauthorized", why);

/**
 * Tenant calls: the bearer credential is counted in the `tenant` budget by its hash, before anything else (a tenant
 * over its budget, or a flood of made-up credentials, costs no database work); it names the org; the timestamp, nonce and signature headers must each be present
 * (each missing one is named); the timestamp must be within the signature window of the control plane's clock
 * (`withinSignatureWindow`, in milliseconds); the HMAC (the org's derived key) must cover method, path with query,
 * timestamp, nonce and the exact body bytes; the nonce must be new. Any failure is a 401 that changes nothing. On
 * success the body bytes are kept for the route to parse, and nonces no request can use any more are pruned.
 */
export function requireTenant(deps: ControlPlaneDeps, limiter: RateLimiter): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const credential = bearerToken(c.req.header("authorization"));
    if (!credential) throw refuse("a tenant credential is required");
    const credentialHash = hashToken(credential);
    limiter.enforce(credentialHash, (name, value) => c.header(name, value));
    const [org] = await deps.db
      .select({ id: cpOrgs.id, slug: cpOrgs.slug })
      .from(cpTenantCredentials)
      .innerJoin(cpOrgs, eq(cpOrgs.id, cpTenantCredentials.orgId))
      .where(
        and(
          eq(cpTenantCredentials.tokenHash, credentialHash),
          inArray(cpOrgs.status, ["provisioning", "ready", "failed"]),
        ),
      );
    if (!org) throw refuse("unknown tenant credential");

    const signature = c.req.header(CP_HEADERS.signature) ?? "";
    const timestamp = c.req.header(CP_HEADERS.timestamp) ?? "";
    const nonce = c.req.header(CP_HEADERS.nonce) ?? "";
    if (!signature) throw refuse(`missing signature (${CP_HEADERS.signature})`);
    if (!timestamp) throw refuse(`missing timestamp (${CP_HEADERS.timestamp})`);
    if (!nonce) throw refuse(`missing nonce (${CP_HEADERS.nonce})`);
    if (!/^\d{1,12}$/.test(timestamp)) throw refuse("malformed timestamp: unix seconds expected");
    const now = deps.clock.now();
    if (!withinSignatureWindow(Number(timestamp), now.getTime())) throw refuse("stale timestamp");
    if (!NONCE_PATTERN.test(nonce)) throw refuse("bad signature");

    const body = await readBytes(c);
    const url = new URL(c.req.url);
    const key = deriveTenantSigningKey(deps.settings.provisionSharedSecret, org.id);
    const signed = { method: c.req.method, path: `${url.pathname}${url.search}`, timestamp, nonce, body };
    if (!signatureMatches(key, signature, signed)) throw refuse("bad signature");

    // A nonce is kept past the last millisecond its request can be accepted (nonceKeptUntilMs) and pruned only once
    // `now` is beyond that, on the same clock reading as the window check: a replay inside the window always finds it.
    const recorded = await deps.db
      .insert(cpRequestNonces)
      .values({ orgId: org.id, nonce, expiresAt: new Date(nonceKeptUntilMs(Number(timestamp))) })
      .onConflictDoNothing()
      .returning({ nonce: cpRequestNonces.nonce });
    if (recorded.length === 0) throw refuse("replayed request");
    await deps.db.delete(cpRequestNonces).where(lt(cpRequestNonces.expiresAt, now));

    c.set("tenant", { orgId: org.id, slug: org.slug });
    c.set("rawBody", body);
    await next();
  };
}

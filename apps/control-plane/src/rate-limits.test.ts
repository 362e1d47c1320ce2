import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { metricValue } from "../../../test-support/metrics.ts";
import { cpRequestNonces } from "./db/schema.ts";
import { createTestControlPlane, type Reply, type TenantIdentity, type TestControlPlane } from "./testing.ts";

/**
 * Bursts against small budgets (admin 6, tenant 4 a minute per credential) on the control plane's clock, which only
 * the test moves: the request past a budget is a 429 with `Retry-After`, the IETF fields and the error envelope, and
 * changes nothing; the other credential and the other budget are unharmed; the budget comes back; refusals are counted.
 */
const LIMITS = { admin: 6, tenant: 4, maxKeys: 100 };

let cp: TestControlPlane;
let alpha: TenantIdentity;
let beta: TenantIdentity;

const limitedCount = async (budget: string) =>
  metricValue(await cp.deps.metrics.text(), "molecule_rate_limited_total", { budget });

function expectRefused(reply: Reply, budget: string, perMinute: number) {
  expect(reply.status).toBe(429);
  expect(reply.headers.get("retry-after")).toBe(String(60 / perMinute));
  expect(reply.headers.get("ratelimit-policy")).toBe(`"${budget}";q=${perMinute};w=60`);
  expect(reply.headers.get("ratelimit")).toBe(`"${budget}";r=0;t=60`);
  expect(reply.body.error).toMatchObject({
    code: "rate_limited",
    message: expect.stringContaining(`the ${budget} budget is ${perMinute} requests a minute per credential`),
    requestId: expect.stringMatching(/^req_/),
    details: { budget, retry_after_seconds: 60 / perMinute },
  });
}

const config = (identity: TenantIdentity, credential?: string) =>
  cp.tenant(identity, "GET", "/cp/tenants/config", credential === undefined ? {} : { credential });

beforeAll(async () => {
  cp = await createTestControlPlane({ settings: { rateLimits: LIMITS } });
  alpha = await cp.createOrg("alpha-rl");
  beta = await cp.createOrg("beta-rl");
});
afterAll(() => cp.close());

// Every budget whole again.
beforeEach(() => cp.clock.advance(60_000));

describe("control plane rate limits", () => {
  it("refuses the admin's 7th request in a burst, counts it, and tenants go on", async () => {
    const before = await limitedCount("admin");
    const burst: Reply[] = [];
    for (let i = 0; i < LIMITS.admin; i++) burst.push(await cp.admin("GET", "/cp/orgs"));
    expect(burst.map((reply) => reply.status)).toEqual(Array(LIMITS.admin).fill(200));
    expect(burst.map((reply) => reply.headers.get("ratelimit"))).toEqual(
      Array.from({ length: LIMITS.admin }, (_, i) => `"admin";r=${LIMITS.admin - 1 - i};t=${10 * (i + 1)}`),
    );
    const refused = await cp.admin("GET", "/cp/orgs");
    expectRefused(refused, "admin", LIMITS.admin);
    expect(await limitedCount("admin")).toBe(before + 1);
    // The metrics route is the admin's too: refused as well.
    expect((await cp.admin("GET", "/metrics")).status).toBe(429);

    const tenant = await config(alpha);
    expect(tenant.status).toBe(200);
    expect(tenant.headers.get("ratelimit")).toBe(`"tenant";r=${LIMITS.tenant - 1};t=15`);

    cp.clock.advance(9_999);
    expect((await cp.admin("GET", "/cp/orgs")).status).toBe(429);
    cp.clock.advance(1);
    expect((await cp.admin("GET", "/cp/orgs")).status).toBe(200);
    expect((await cp.admin("GET", "/cp/orgs")).status).toBe(429);
  });

  it("refuses a tenant's 5th signed request before recording its nonce; another tenant and the admin go on", async () => {
    const before = await limitedCount("tenant");
    for (let i = 0; i < LIMITS.tenant; i++) expect((await config(alpha)).status).toBe(200);
    const nonces = (await cp.db.db.select().from(cpRequestNonces)).length;
    const refused = await config(alpha);
    expectRefused(refused, "tenant", LIMITS.tenant);
    expect((await cp.db.db.select().from(cpRequestNonces)).length).toBe(nonces);
    expect(await limitedCount("tenant")).toBe(before + 1);

    expect((await config(beta)).status).toBe(200);
    expect((await cp.admin("GET", "/cp/orgs")).status).toBe(200);

    cp.clock.advance(15_000);
    expect((await config(alpha)).status).toBe(200);
    expect((await config(alpha)).status).toBe(429);
  });

  it("counts a made-up credential too, before looking it up", async () => {
    for (let i = 0; i < LIMITS.tenant; i++) {
      expect((await config(alpha, "mct_made_up_credential")).status).toBe(401);
    }
    expectRefused(await config(alpha, "mct_made_up_credential"), "tenant", LIMITS.tenant);
    expect((await config(alpha)).status).toBe(200);
  });
});

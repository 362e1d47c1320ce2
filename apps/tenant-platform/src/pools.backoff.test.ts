/**
 * A pool whose members fail to start (an image that is missing, a backend refusing) backs off: the filler tries it
 * again after a wait that doubles per failed round (capped), or the backend's Retry-After when longer, one member at
 * a time, instead of creating and destroying members every round. GET /pools says why and when it tries again.
 */
import { type Provisioner, ProvisionerError } from "@molecule/provisioner-core";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { metricValue } from "../../../test-support/metrics.ts";
import { ADMIN_TOKEN, createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { POOL_RETRY_BASE_MS } from "./services/pool-filler.ts";

let platform: TestPlatform;
/** What the next provision does: start the member, or fail as told. */
let failWith: ((token: string) => Error) | null = null;
let provisions = 0;
const poolTokens: string[] = [];

beforeAll(async () => {
  const fake = createFakeProvisioner();
  const provisioner: Provisioner = {
    ...fake,
    async provision(spec, handle, ctx) {
      provisions++;
      const token = spec.env.WORKSPACE_POOL_TOKEN ?? "";
      poolTokens.push(token);
      if (failWith) throw failWith(token);
      return fake.provision(spec, handle, ctx);
    },
  };
  platform = await createTestPlatform(provisioner);
  platform.clock.freeze();
});
afterAll(() => platform.close());

async function pool() {
  const { body } = await platform.call("GET", "/pools");
  return body.pools[0];
}

const at = (msFromNow: number) => new Date(platform.clock.now().getTime() + msFromNow).toISOString();

describe("a pool whose members fail to start", () => {
  it("waits longer after each failed round, honours Retry-After, tries one member at a time, and says why", async () => {
    // The backend echoes the member's pool token in its message: it must be scrubbed everywhere.
    failWith = (token) => new ProvisionerError("image_unavailable", `no such image (env ${token})`, false);
    expect(
      (await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 3 } })).status,
    ).toBe(200);
    expect(await platform.pools.fill()).toEqual({ started: 0, failed: 3, removed: 0 });
    const first = await pool();
    expect(first.last_error).toEqual({
      code: "image_unavailable",
      message: expect.stringMatching(/^no such image/),
      at: at(0),
      attempts: 1,
    });
    expect(first.next_attempt_at).toBe(at(POOL_RETRY_BASE_MS));

    // Before the wait is over a round destroys the failed members and starts nothing.
    const before = provisions;
    expect(await platform.pools.fill()).toEqual({ started: 0, failed: 0, removed: 3 });
    platform.clock.advance(POOL_RETRY_BASE_MS - 1);
    expect(await platform.pools.fill()).toEqual({ started: 0, failed: 0, removed: 0 });
    expect(provisions).toBe(before);

    // Then one member is tried, and the wait doubles.
    platform.clock.advance(1);
    expect(await platform.pools.fill()).toMatchObject({ started: 0, failed: 1 });
    expect(provisions).toBe(before + 1);
    expect(await pool()).toMatchObject({
      last_error: { attempts: 2, at: at(0) },
      next_attempt_at: at(2 * POOL_RETRY_BASE_MS),
    });

    // A backend asking for more time than the backoff (a 429's Retry-After) gets it.
    platform.clock.advance(2 * POOL_RETRY_BASE_MS);
    failWith = () =>
      new ProvisionerError("rate_limited", "Fly create failed with HTTP 429", true, { retryAfterMs: 90_000 });
    expect(await platform.pools.fill()).toMatchObject({ failed: 1 });
    expect(await pool()).toMatchObject({
      last_error: { code: "rate_limited", attempts: 3 },
      next_attempt_at: at(90_000),
    });
    platform.clock.advance(90_000 - 1);
    await platform.pools.fill();
    expect(provisions).toBe(before + 2);

    // Once the backend is back, one member starts, the failure is cleared, and the rest follow.
    failWith = null;
    platform.clock.advance(1);
    expect(await platform.pools.fill()).toMatchObject({ started: 1, failed: 0 });
    expect(await pool()).toMatchObject({ starting: 1, last_error: null, next_attempt_at: null });
    expect(await platform.pools.fill()).toMatchObject({ started: 2, failed: 0 });
    expect((await pool()).starting).toBe(3);

    const everything = [
      JSON.stringify((await platform.call("GET", "/pools")).body),
      JSON.stringify((await platform.call("GET", "/admin/stats")).body),
      platform.logs.join(""),
    ].join("\n");
    expect(poolTokens.length).toBeGreaterThan(0);
    for (const token of poolTokens) expect(everything).not.toContain(token);

    const metrics = await (
      await platform.app.request("/metrics", { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    ).text();
    const series = { runtime: "echo", tier: "2" };
    const failures = "molecule_pool_member_start_failures_total";
    expect(metricValue(metrics, failures, { ...series, code: "image_unavailable" })).toBe(4);
    expect(metricValue(metrics, failures, { ...series, code: "rate_limited" })).toBe(1);
  });

  it("a PUT resets the wait: the pool is tried again at once", async () => {
    failWith = () => new ProvisionerError("backend_unavailable", "the engine is down", true);
    await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 3, size: 1 } });
    await platform.pools.fill();
    const failed = (await platform.call("GET", "/pools")).body.pools.find(
      (p: { tier: number }) => p.tier === 3,
    );
    expect(failed).toMatchObject({ last_error: { code: "backend_unavailable" }, next_attempt_at: at(5_000) });

    failWith = null;
    const put = await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 3, size: 1 } });
    expect(put.body).toMatchObject({ last_error: null, next_attempt_at: null });
    const before = provisions;
    await platform.pools.fill();
    expect(provisions).toBe(before + 1);
    expect(
      (await platform.call("GET", "/pools")).body.pools.find((p: { tier: number }) => p.tier === 3),
    ).toMatchObject({ starting: 1, last_error: null });
  });
});

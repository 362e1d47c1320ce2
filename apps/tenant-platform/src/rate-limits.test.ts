import { A2A_PROXY_ERROR_CODES } from "@molecule/contracts";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { metricValue } from "../../../test-support/metrics.ts";
import { createTestPlatform, type TestPlatform, type TestResponse } from "../../../test-support/platform.ts";

/**
 * Bursts against small budgets (api 10, agent 4, a2a 3 a minute per credential): the request past a budget is a 429
 * with `Retry-After`, the IETF fields and the error envelope (a JSON-RPC error for the A2A proxy), other credentials
 * and other budgets go on unharmed, the budget comes back as the platform's clock moves, and refusals are counted.
 */
const LIMITS = { api: 10, agent: 4, a2a: 3, maxKeys: 1000 };

let platform: TestPlatform;
let fake: FakeProvisioner;
let first: { id: string; token: string };
let second: { id: string; token: string };
let pendingBoot: { id: string; boot: string };

async function created(name: string): Promise<{ id: string; boot: string }> {
  const response = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  expect(response.status).toBe(202);
  await platform.runner.drain();
  const id: string = response.body.workspace.id;
  return { id, boot: fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN ?? "" };
}

async function registered(name: string): Promise<{ id: string; token: string }> {
  const { id, boot } = await created(name);
  const response = await platform.call("POST", "/registry/register", { token: boot, body: { id } });
  expect(response.status).toBe(200);
  return { id, token: response.body.auth_token };
}

const limitedCount = async (budget: string) =>
  metricValue(await platform.deps.metrics.text(), "molecule_rate_limited_total", { budget });

/** The answer refused for being over `budget`, with both IETF fields and Retry-After. */
function expectRefused(response: TestResponse, budget: string, perMinute: number) {
  expect(response.status).toBe(429);
  expect(response.headers.get("retry-after")).toBe(String(60 / perMinute));
  expect(response.headers.get("ratelimit-policy")).toBe(`"${budget}";q=${perMinute};w=60`);
  expect(response.headers.get("ratelimit")).toBe(`"${budget}";r=0;t=60`);
}

function expectEnvelope(response: TestResponse, budget: string) {
  expect(response.body.error).toMatchObject({
    code: "rate_limited",
    message: expect.stringContaining(`the ${budget} budget`),
    requestId: expect.stringMatching(/^req_/),
    details: { budget, retry_after_seconds: expect.any(Number) },
  });
  expect(response.body.error.requestId).toBe(response.headers.get("x-request-id"));
}

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake, { rateLimits: LIMITS });
  first = await registered("first");
  second = await registered("second");
  pendingBoot = await created("pending");
  platform.clock.freeze(); // from here budgets refill only when the test moves the clock
  await platform.listen();
});
afterAll(() => platform.close());

// Every budget whole again: a minute on the platform's clock refills them all.
beforeEach(() => platform.clock.advance(60_000));

describe("the api budget, per credential", () => {
  it("refuses the admin's 11th request in a burst, counts it, and leaves heartbeats, registration and workspace tokens alone", async () => {
    const before = await limitedCount("api");
    const burst: TestResponse[] = [];
    for (let i = 0; i < LIMITS.api; i++) burst.push(await platform.callServed("GET", "/workspaces"));
    expect(burst.map((response) => response.status)).toEqual(Array(LIMITS.api).fill(200));
    expect(burst.map((response) => response.headers.get("ratelimit"))).toEqual(
      Array.from({ length: LIMITS.api }, (_, i) => `"api";r=${LIMITS.api - 1 - i};t=${6 * (i + 1)}`),
    );
    expect(burst[0]?.headers.get("ratelimit-policy")).toBe('"api";q=10;w=60');
    expect(burst[0]?.headers.get("retry-after")).toBeNull();

    const refused = await platform.callServed("GET", "/workspaces");
    expectRefused(refused, "api", LIMITS.api);
    expectEnvelope(refused, "api");
    expect(await limitedCount("api")).toBe(before + 1);

    // The same budget, another credential: a workspace pulling its own secrets.
    const own = await platform.callServed("GET", `/workspaces/${first.id}/secrets/values`, {
      token: first.token,
    });
    expect(own.status).toBe(200);
    expect(own.headers.get("ratelimit")).toBe(`"api";r=${LIMITS.api - 1};t=6`);
    // Another budget: heartbeats and a registration go on while the admin is refused.
    const beat = await platform.callServed("POST", "/registry/heartbeat", {
      token: first.token,
      body: { workspace_id: first.id },
    });
    expect(beat.status).toBe(200);
    expect(beat.headers.get("ratelimit")).toBe(`"agent";r=${LIMITS.agent - 1};t=15`);
    const registration = await platform.callServed("POST", "/registry/register", {
      token: pendingBoot.boot,
      body: { id: pendingBoot.id },
    });
    expect(registration.status).toBe(200);
    expect(registration.headers.get("ratelimit-policy")).toBe('"agent";q=4;w=60');
    expect((await platform.callServed("GET", "/workspaces")).status).toBe(429);

    // One more request every 6 s: not before, exactly one at it.
    platform.clock.advance(5_000);
    expect((await platform.callServed("GET", "/workspaces")).status).toBe(429);
    platform.clock.advance(1_000);
    expect((await platform.callServed("GET", "/workspaces")).status).toBe(200);
    expect((await platform.callServed("GET", "/workspaces")).status).toBe(429);
    expect(await limitedCount("api")).toBe(before + 4);
  });

  it("refuses in process as served (the Hono app), and an unknown token is counted before any lookup", async () => {
    for (let i = 0; i < LIMITS.api; i++) {
      expect((await platform.call("GET", "/workspaces", { token: "mwt_nobody" })).status).toBe(401);
    }
    const refused = await platform.call("GET", "/workspaces", { token: "mwt_nobody" });
    expectRefused(refused, "api", LIMITS.api);
    expectEnvelope(refused, "api");
    // The admin has a budget of its own.
    expect((await platform.call("GET", "/workspaces")).status).toBe(200);
  });
});

describe("the agent budget: heartbeats and registration, per workspace token", () => {
  it.each([
    "served",
    "in process",
  ] as const)("refuses a noisy agent's 5th heartbeat (%s) and never starves the admin or another agent", async (how) => {
    const send = how === "served" ? platform.callServed : platform.call;
    const before = await limitedCount("agent");
    const beat = (agent: { id: string; token: string }) =>
      send("POST", "/registry/heartbeat", { token: agent.token, body: { workspace_id: agent.id } });
    for (let i = 0; i < LIMITS.agent; i++) expect((await beat(first)).status).toBe(200);
    const refused = await beat(first);
    expectRefused(refused, "agent", LIMITS.agent);
    expectEnvelope(refused, "agent");
    expect(await limitedCount("agent")).toBe(before + 1);

    expect((await beat(second)).status).toBe(200);
    const admin = await send("GET", "/workspaces");
    expect(admin.status).toBe(200);
    expect(admin.headers.get("ratelimit")).toBe(`"api";r=${LIMITS.api - 1};t=6`);

    platform.clock.advance(15_000);
    expect((await beat(first)).status).toBe(200);
    expect((await beat(first)).status).toBe(429);
  });
});

describe("the a2a budget, per caller", () => {
  it.each([
    "served",
    "in process",
  ] as const)("answers the 4th call in a burst (%s) with HTTP 429 and a JSON-RPC error, the caller's heartbeats unharmed", async (how) => {
    const send = how === "served" ? platform.callServed : platform.call;
    const before = await limitedCount("a2a");
    const call = (id: number) =>
      send("POST", `/workspaces/${second.id}/a2a`, {
        token: first.token,
        body: { jsonrpc: "2.0", id, method: "message/send", params: {} },
      });
    for (let i = 0; i < LIMITS.a2a; i++) {
      // The target has no agent: each call is counted, then answered as the proxy answers it.
      const answered = await call(i);
      expect(answered.status).not.toBe(429);
      expect(answered.headers.get("ratelimit")).toBe(`"a2a";r=${LIMITS.a2a - 1 - i};t=${20 * (i + 1)}`);
    }
    const refused = await call(99);
    expectRefused(refused, "a2a", LIMITS.a2a);
    expect(refused.body).toEqual({
      jsonrpc: "2.0",
      id: null,
      error: {
        code: A2A_PROXY_ERROR_CODES.rate_limited,
        message: expect.stringContaining("the a2a budget is 3 requests a minute per credential"),
        data: {
          code: "rate_limited",
          request_id: refused.headers.get("x-request-id"),
          details: { budget: "a2a", retry_after_seconds: 20 },
        },
      },
    });
    expect(await limitedCount("a2a")).toBe(before + 1);
    const beat = await send("POST", "/registry/heartbeat", {
      token: first.token,
      body: { workspace_id: first.id },
    });
    expect(beat.status).toBe(200);
    // The admin's A2A calls have their own bucket.
    const admin = await send("POST", `/workspaces/${second.id}/a2a`, {
      body: { jsonrpc: "2.0", id: 1, method: "message/send", params: {} },
    });
    expect(admin.status).not.toBe(429);
  });
});

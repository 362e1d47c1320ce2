import { DomainError } from "@molecule/contracts";
import { describe, expect, it } from "vitest";
import { metricValue } from "../../../test-support/metrics.ts";
import { ServiceMetrics } from "./metrics.ts";
import { createRateLimiters, RateLimiter } from "./rate-limit.ts";

/** A clock the test moves by hand, in milliseconds. */
function manualClock(start = 1_000_000) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
    set(ms: number) {
      now = ms;
    },
  };
}

/** Runs `enforce` and returns the headers it set and the error it threw, if any. */
function enforce(limiter: RateLimiter, key: string) {
  const headers: Record<string, string> = {};
  try {
    limiter.enforce(key, (name, value) => {
      headers[name] = value;
    });
    return { headers, error: null };
  } catch (error) {
    return { headers, error: error as DomainError };
  }
}

describe("RateLimiter", () => {
  it("allows a whole minute's budget at once, refuses the next, and says when to come back", () => {
    const clock = manualClock();
    const limiter = new RateLimiter("api", 5, { now: clock.now });
    const remaining = Array.from({ length: 5 }, () => limiter.take("k")?.remaining);
    expect(remaining).toEqual([4, 3, 2, 1, 0]);
    expect(limiter.take("k")).toEqual({
      allowed: false,
      remaining: 0,
      resetSeconds: 60,
      retryAfterSeconds: 12,
    });
    // One more every 60/5 = 12 s: not at 11.999 s, then exactly one at 12 s.
    clock.advance(11_999);
    expect(limiter.take("k")?.allowed).toBe(false);
    clock.advance(1);
    expect(limiter.take("k")).toMatchObject({ allowed: true, remaining: 0 });
    expect(limiter.take("k")?.allowed).toBe(false);
    // After a full idle minute the whole budget is back.
    clock.advance(60_000);
    expect(Array.from({ length: 6 }, () => limiter.take("k")?.allowed)).toEqual([
      true,
      true,
      true,
      true,
      true,
      false,
    ]);
  });

  it("counts each key on its own", () => {
    const clock = manualClock();
    const limiter = new RateLimiter("agent", 2, { now: clock.now });
    expect([limiter.take("a")?.allowed, limiter.take("a")?.allowed, limiter.take("a")?.allowed]).toEqual([
      true,
      true,
      false,
    ]);
    expect(limiter.take("b")).toMatchObject({ allowed: true, remaining: 1 });
  });

  it("fits exactly N requests when 60000/N is not a whole number of milliseconds", () => {
    const clock = manualClock();
    const limiter = new RateLimiter("api", 7, { now: clock.now });
    const allowed = Array.from({ length: 8 }, () => limiter.take("k")?.allowed);
    expect(allowed.filter(Boolean)).toHaveLength(7);
    expect(allowed[7]).toBe(false);
  });

  it("is off at 0: nothing counted, nothing kept", () => {
    const limiter = new RateLimiter("a2a", 0, { now: () => 0 });
    expect(limiter.enabled).toBe(false);
    for (let i = 0; i < 1000; i++) expect(limiter.take("k")).toBeNull();
    expect(enforce(limiter, "k")).toEqual({ headers: {}, error: null });
    expect(limiter.size).toBe(0);
  });

  it("starts a key afresh when the clock went back by more than a window", () => {
    const clock = manualClock(10_000_000);
    const limiter = new RateLimiter("api", 2, { now: clock.now });
    limiter.take("k");
    limiter.take("k");
    expect(limiter.take("k")?.allowed).toBe(false);
    clock.set(1_000_000);
    expect(limiter.take("k")?.allowed).toBe(true);
  });

  it("keeps at most maxKeys: idle keys go first, then the oldest when all are active", () => {
    const clock = manualClock();
    const limiter = new RateLimiter("agent", 1, { now: clock.now, maxKeys: 100 });
    for (let i = 0; i < 100; i++) limiter.take(`idle-${i}`);
    clock.advance(60_000); // every key's budget is whole again: all idle
    limiter.take("fresh");
    expect(limiter.size).toBe(1);
    for (let i = 0; i < 100_000; i++) limiter.take(`busy-${i}`);
    expect(limiter.size).toBeLessThanOrEqual(100);
    // The newest key is still remembered (refused), the oldest was forgotten (a whole budget again).
    expect(limiter.take("busy-99999")?.allowed).toBe(false);
    expect(limiter.take("busy-0")?.allowed).toBe(true);
  });

  it("enforce sets the IETF fields on every answer and Retry-After with the rate_limited error past the budget", () => {
    const clock = manualClock();
    const limiter = new RateLimiter("api", 3, { now: clock.now });
    expect(enforce(limiter, "k")).toEqual({
      headers: { "ratelimit-policy": '"api";q=3;w=60', ratelimit: '"api";r=2;t=20' },
      error: null,
    });
    enforce(limiter, "k");
    enforce(limiter, "k");
    const refused = enforce(limiter, "k");
    expect(refused.headers).toEqual({
      "ratelimit-policy": '"api";q=3;w=60',
      ratelimit: '"api";r=0;t=60',
      "retry-after": "20",
    });
    expect(refused.error).toBeInstanceOf(DomainError);
    expect(refused.error).toMatchObject({
      code: "rate_limited",
      details: { budget: "api", retry_after_seconds: 20 },
    });
    expect(refused.error?.message).toContain("the api budget is 3 requests a minute per credential");
  });
});

describe("createRateLimiters", () => {
  it("counts refusals per budget in molecule_rate_limited_total, never naming the key", async () => {
    const metrics = new ServiceMetrics();
    const clock = manualClock();
    const limiters = createRateLimiters({ api: 1, agent: 1 }, { now: clock.now, metrics });
    limiters.api.take("secret-looking-key");
    limiters.api.take("secret-looking-key");
    limiters.api.take("secret-looking-key");
    limiters.agent.take("other");
    const text = await metrics.text();
    expect(text).toContain('molecule_rate_limited_total{budget="api"} 2');
    expect(text).toContain('molecule_rate_limited_total{budget="agent"} 0');
    expect(text).not.toContain("secret-looking-key");
  });

  it("shares the one series when built twice over one registry (an app made twice)", async () => {
    const metrics = new ServiceMetrics();
    const clock = manualClock();
    const first = createRateLimiters({ admin: 1 }, { now: clock.now, metrics });
    const second = createRateLimiters({ admin: 1 }, { now: clock.now, metrics });
    first.admin.take("k");
    first.admin.take("k");
    second.admin.take("k");
    second.admin.take("k");
    expect(metricValue(await metrics.text(), "molecule_rate_limited_total", { budget: "admin" })).toBe(2);
  });
});

import { describe, expect, it } from "vitest";
import { Backoff, backoffDelay, parseRetryAfter, type RetryPolicy } from "./backoff.ts";

describe("backoffDelay", () => {
  it("grows by the factor from the base and stops at the cap", () => {
    const none = { baseMs: 1_000, maxMs: 30_000, jitter: "none" } as const;
    expect([1, 2, 3, 4, 5, 6, 7, 200].map((n) => backoffDelay(n, none))).toEqual([
      1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000,
    ]);
    expect([1, 2, 3, 4].map((n) => backoffDelay(n, { ...none, baseMs: 100, factor: 1.5 }))).toEqual([
      100, 150, 225, 338,
    ]);
    expect(backoffDelay(0, none)).toBe(1_000);
  });

  it("equal jitter: a value in [d/2, d] chosen by the injected random source", () => {
    const policy = { baseMs: 200, maxMs: 5_000 };
    expect(backoffDelay(3, { ...policy, random: () => 0 })).toBe(400);
    expect(backoffDelay(3, { ...policy, random: () => 0.5 })).toBe(600);
    expect(backoffDelay(3, { ...policy, random: () => 0.999_999 })).toBe(800);
    expect(backoffDelay(30, { ...policy, random: () => 0 })).toBe(2_500);
  });
});

describe("Backoff", () => {
  const policy: RetryPolicy = { maxAttempts: 4, baseDelayMs: 100, maxDelayMs: 1_000, maxElapsedMs: 10_000 };

  it("answers the jittered delays, then null once the attempts are spent", () => {
    const backoff = new Backoff(
      policy,
      () => 0,
      () => 0,
    );
    expect([backoff.next(), backoff.next(), backoff.next(), backoff.next()]).toEqual([50, 100, 200, null]);
    expect(backoff.attempts).toBe(4);
  });

  it("waits what Retry-After asked for instead", () => {
    const backoff = new Backoff(
      policy,
      () => 0,
      () => 0,
    );
    expect(backoff.next(2_500)).toBe(2_500);
  });

  it("gives up when the wait would end past the elapsed budget", () => {
    let now = 0;
    const backoff = new Backoff(
      policy,
      () => now,
      () => 0,
    );
    now = 9_990;
    expect(backoff.next()).toBeNull();
    const other = new Backoff(
      policy,
      () => 0,
      () => 0,
    );
    expect(other.next(10_001)).toBeNull();
  });
});

describe("parseRetryAfter", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");

  it("reads delta seconds and HTTP dates", () => {
    expect(parseRetryAfter("3", now)).toBe(3_000);
    expect(parseRetryAfter(" 1.5 ", now)).toBe(1_500);
    expect(parseRetryAfter(["2", "9"], now)).toBe(2_000);
    expect(parseRetryAfter("Thu, 01 Jan 2026 00:00:04 GMT", now)).toBe(4_000);
    expect(parseRetryAfter("Wed, 31 Dec 2025 23:00:00 GMT", now)).toBe(0);
  });

  it("is undefined when absent or unreadable", () => {
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
    expect(parseRetryAfter("", now)).toBeUndefined();
    expect(parseRetryAfter("soon", now)).toBeUndefined();
  });
});

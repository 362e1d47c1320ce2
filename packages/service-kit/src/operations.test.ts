import { Writable } from "node:stream";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ClaimGate, quarantinedError, retryDelayMs, StepRecorder, WorkLoop } from "./operations.ts";

interface Pending<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

function pending<T>(): Pending<T> {
  let resolve: (value: T) => void = () => {};
  let reject: (error: unknown) => void = () => {};
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A work source whose every claim and execution the test answers by hand. */
function scriptedSource() {
  const claims: Pending<string | null>[] = [];
  const executions = new Map<string, Pending<void>>();
  const executed: string[] = [];
  return {
    claims,
    executions,
    executed,
    claim: () => {
      const claim = pending<string | null>();
      claims.push(claim);
      return claim.promise;
    },
    execute: (item: string) => {
      executed.push(item);
      const execution = pending<void>();
      executions.set(item, execution);
      return execution.promise;
    },
  };
}

function collectingLogger() {
  const lines: { msg: string; err?: { message: string } }[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { logger: pino({ level: "info" }, stream), lines };
}

const POLL_MS = 60_000;

/** Lets every promise callback already queued run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("WorkLoop", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  function loopOver(source: ReturnType<typeof scriptedSource>, maxConcurrent?: number) {
    return new WorkLoop({
      claim: source.claim,
      execute: source.execute,
      logger: collectingLogger().logger,
      pollIntervalMs: POLL_MS,
      name: "test",
      ...(maxConcurrent ? { maxConcurrent } : {}),
    });
  }

  it("finding nothing, it sleeps the poll interval before claiming again", async () => {
    const source = scriptedSource();
    const loop = loopOver(source);
    loop.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(source.claims).toHaveLength(1);
    source.claims[0]?.resolve(null);
    await vi.advanceTimersByTimeAsync(POLL_MS - 1);
    expect(source.claims).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(source.claims).toHaveLength(2);
    source.claims[1]?.resolve(null);
    await loop.stop();
  });

  it("a wake while a pass is under way schedules one more pass right after it, not at the next poll", async () => {
    const source = scriptedSource();
    const loop = loopOver(source);
    loop.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(source.claims).toHaveLength(1);
    loop.wake();
    loop.wake();
    source.claims[0]?.resolve(null);
    await vi.advanceTimersByTimeAsync(0);
    expect(source.claims).toHaveLength(2);
    source.claims[1]?.resolve(null);
    // Two wakes during one pass make one more pass, not two.
    await vi.advanceTimersByTimeAsync(0);
    expect(source.claims).toHaveLength(2);
    await loop.stop();
  });

  it("a wake while idle starts a pass at once", async () => {
    const source = scriptedSource();
    const loop = loopOver(source);
    loop.start();
    await vi.advanceTimersByTimeAsync(0);
    source.claims[0]?.resolve(null);
    await vi.advanceTimersByTimeAsync(0);
    loop.wake();
    await vi.advanceTimersByTimeAsync(0);
    expect(source.claims).toHaveLength(2);
    source.claims[1]?.resolve(null);
    await loop.stop();
  });

  it("runs claimed items side by side up to maxConcurrent; a finished one frees its slot and wakes the loop", async () => {
    const source = scriptedSource();
    const loop = loopOver(source, 2);
    loop.start();
    await vi.advanceTimersByTimeAsync(0);
    source.claims[0]?.resolve("a");
    await vi.advanceTimersByTimeAsync(0);
    source.claims[1]?.resolve("b");
    await vi.advanceTimersByTimeAsync(0);
    expect(source.executed).toEqual(["a", "b"]);
    // Both slots taken: the pass ended without a third claim.
    expect(source.claims).toHaveLength(2);
    source.executions.get("a")?.resolve();
    await vi.advanceTimersByTimeAsync(0);
    expect(source.claims).toHaveLength(3);
    source.claims[2]?.resolve(null);
    source.executions.get("b")?.resolve();
    await loop.stop();
  });

  it("stop waits for running items, and a stopped loop claims nothing more", async () => {
    const source = scriptedSource();
    const loop = loopOver(source);
    loop.start();
    await vi.advanceTimersByTimeAsync(0);
    source.claims[0]?.resolve("a");
    await vi.advanceTimersByTimeAsync(0);
    source.claims[1]?.resolve(null);
    await vi.advanceTimersByTimeAsync(0);
    let stopped = false;
    const stopping = loop.stop().then(() => {
      stopped = true;
    });
    await vi.advanceTimersByTimeAsync(0);
    expect(stopped).toBe(false);
    source.executions.get("a")?.resolve();
    await stopping;
    expect(stopped).toBe(true);
    loop.wake();
    await vi.advanceTimersByTimeAsync(POLL_MS * 2);
    expect(source.claims).toHaveLength(2);
  });

  it("drain runs items one at a time until none is left and returns how many ran", async () => {
    const items = ["a", "b", "c"];
    const order: string[] = [];
    let running = 0;
    const loop = new WorkLoop({
      claim: async () => items.shift() ?? null,
      execute: async (item: string) => {
        running++;
        expect(running).toBe(1);
        await Promise.resolve();
        order.push(item);
        running--;
      },
      logger: collectingLogger().logger,
      pollIntervalMs: POLL_MS,
      name: "test",
    });
    expect(await loop.drain()).toBe(3);
    expect(order).toEqual(["a", "b", "c"]);
    expect(await loop.drain()).toBe(0);
  });

  it("a failing claim is logged and retried at the next poll", async () => {
    const { logger, lines } = collectingLogger();
    let calls = 0;
    const loop = new WorkLoop({
      claim: async () => {
        calls++;
        if (calls === 1) throw new Error("database went away");
        return null;
      },
      execute: async () => {},
      logger,
      pollIntervalMs: POLL_MS,
      name: "operation",
    });
    loop.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(lines.map((line) => [line.msg, line.err?.message])).toEqual([
      ["operation loop failed; retrying at the next poll", "database went away"],
    ]);
    await vi.advanceTimersByTimeAsync(POLL_MS);
    expect(calls).toBe(2);
    await loop.stop();
  });
});

describe("StepRecorder", () => {
  it("writes steps in the order reported, each after the previous write finished, and tells onStep at once", async () => {
    const writes: Pending<void>[] = [];
    const written: string[] = [];
    const told: string[] = [];
    const recorder = new StepRecorder(
      (step) => {
        const write = pending<void>();
        writes.push(write);
        return write.promise.then(() => {
          written.push(step.name);
        });
      },
      (step) => told.push(step.name),
    );
    const step = recorder.reporter();
    step("pulled", "image molecule/workspace-echo");
    step("started");
    expect(told).toEqual(["pulled", "started"]);
    await settle();
    expect(writes).toHaveLength(1);
    writes[0]?.resolve();
    await settle();
    expect(writes).toHaveLength(2);
    writes[1]?.resolve();
    await recorder.flush();
    expect(written).toEqual(["pulled", "started"]);
  });

  it("records each step's start, duration and detail", async () => {
    const steps: unknown[] = [];
    const recorder = new StepRecorder(async (step) => {
      steps.push(step);
    });
    const step = recorder.reporter();
    step("volume_created");
    step("machine_started", "region ord");
    await recorder.flush();
    expect(steps).toEqual([
      { name: "volume_created", startedAt: expect.any(String), durationMs: expect.any(Number) },
      {
        name: "machine_started",
        startedAt: expect.any(String),
        durationMs: expect.any(Number),
        detail: "region ord",
      },
    ]);
  });

  it("flush rejects when a write failed", async () => {
    const recorder = new StepRecorder(async () => {
      throw new Error("row is gone");
    });
    recorder.reporter()("started");
    await expect(recorder.flush()).rejects.toThrow("row is gone");
  });
});

describe("retryDelayMs", () => {
  it("doubles from one second and stops at thirty", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 20].map(retryDelayMs)).toEqual([
      1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000,
    ]);
  });
});

describe("ClaimGate", () => {
  const pending = (id: string, attempts = 0) => ({ id, status: "pending", attempts });
  /** A `running` row a claim query found: its lease expired, so its last attempt never finished. */
  const abandoned = (id: string, attempts: number) => ({ id, status: "running", attempts });

  it("runs pending rows side by side", () => {
    const gate = new ClaimGate();
    expect(gate.decide(pending("a"), 3)).toBe("run");
    gate.claimed("a", "run");
    expect(gate.open).toBe(true);
    expect(gate.decide(pending("b"), 3)).toBe("run");
  });

  it("quarantines an abandoned row whose attempts are spent, busy or not", () => {
    const gate = new ClaimGate();
    expect(gate.decide(abandoned("a", 3), 3)).toBe("quarantine");
    expect(gate.decide(abandoned("a", 4), 3)).toBe("quarantine");
    gate.claimed("b", "run");
    expect(gate.decide(abandoned("a", 3), 3)).toBe("quarantine");
  });

  it("runs an abandoned row with attempts left alone: it waits for running work, then nothing else is claimed", () => {
    const gate = new ClaimGate();
    gate.claimed("busy", "run");
    expect(gate.decide(abandoned("a", 2), 3)).toBe("wait");
    gate.finished("busy");
    expect(gate.decide(abandoned("a", 2), 3)).toBe("run_alone");
    gate.claimed("a", "run_alone");
    expect(gate.open).toBe(false);
    expect(gate.decide(pending("b"), 3)).toBe("wait");
    gate.finished("a");
    expect(gate.open).toBe(true);
    expect(gate.decide(pending("b"), 3)).toBe("run");
  });

  it("a row this process is running is held, even when its lease looks expired", () => {
    const gate = new ClaimGate();
    gate.claimed("a", "run");
    expect(gate.decide(abandoned("a", 3), 3)).toBe("held");
    expect(gate.decide(abandoned("a", 1), 3)).toBe("held");
  });
});

describe("quarantinedError", () => {
  it("names the attempt that never finished and says the operation will not run again", () => {
    expect(quarantinedError(3, 3)).toEqual({
      code: "quarantined",
      message:
        "attempt 3 of 3 never finished (the process running it stopped or hung); the operation was quarantined and will not run again",
    });
  });
});

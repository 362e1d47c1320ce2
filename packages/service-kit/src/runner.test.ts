import { Writable } from "node:stream";
import { createDatabase } from "@molecule/db";
import { ProvisionerError } from "@molecule/provisioner-core";
import { eq, sql } from "drizzle-orm";
import { integer, jsonb, pgTable, text, timestamp } from "drizzle-orm/pg-core";
import pino from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../../test-support/pg.ts";
import { QUARANTINED, retryDelayMs } from "./operations.ts";
import {
  AttemptSuperseded,
  countHungOperations,
  HUNG,
  OperationDeferred,
  type OperationHandlers,
  OperationRunner,
  OperationSuperseded,
  type OperationsTable,
  RELEASED,
  RunnerStopping,
} from "./runner.ts";

// A table of its own: the runner knows nothing of either service's operations.
const jobs = pgTable("runner_jobs", {
  id: text("id").primaryKey(),
  queue: text("queue").notNull(),
  kind: text("kind").notNull(),
  status: text("status").notNull().default("pending"),
  attempts: integer("attempts").notNull().default(0),
  steps: jsonb("steps").notNull().default([]),
  result: jsonb("result"),
  error: jsonb("error"),
  lockedBy: text("locked_by"),
  lockedUntil: timestamp("locked_until", { withTimezone: true }),
  runAfter: timestamp("run_after", { withTimezone: true }).notNull(),
  createdAt: timestamp("created_at", { withTimezone: true }).notNull(),
  updatedAt: timestamp("updated_at", { withTimezone: true }).notNull(),
  finishedAt: timestamp("finished_at", { withTimezone: true }),
});
type Job = typeof jobs.$inferSelect;
// What an operation's fenced writes change: the state of its subject.
const subjects = pgTable("runner_subjects", {
  queue: text("queue").primaryKey(),
  state: text("state").notNull(),
});
type JobError = { code: string; message: string; retryable: boolean };

class Clock {
  constructor(private ms = Date.parse("2026-01-01T00:00:00Z")) {}
  now(): Date {
    return new Date(this.ms);
  }
  advance(ms: number): void {
    this.ms += ms;
  }
}

const settings = { operationLeaseMs: 30_000, operationMaxAttempts: 3 };
let database: TestDatabase;
let clock: Clock;

beforeAll(async () => {
  database = await createTestDatabase();
  await database.db.execute(sql`
    CREATE TABLE runner_jobs (
      id text PRIMARY KEY, queue text NOT NULL, kind text NOT NULL, status text NOT NULL DEFAULT 'pending',
      attempts integer NOT NULL DEFAULT 0, steps jsonb NOT NULL DEFAULT '[]', result jsonb, error jsonb,
      locked_by text, locked_until timestamptz, run_after timestamptz NOT NULL, created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL, finished_at timestamptz)`);
  await database.db.execute(sql`CREATE TABLE runner_subjects (queue text PRIMARY KEY, state text NOT NULL)`);
});
afterAll(async () => {
  await database.drop();
});
beforeEach(async () => {
  clock = new Clock();
  await database.db.delete(jobs);
  await database.db.delete(subjects);
});

function logger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { logger: pino({ level: "info" }, stream), lines };
}

function runner(
  handlers: OperationHandlers<Job, JobError>,
  instanceId = "runner-a",
  operationDeadlinesMs?: Record<string, number>,
  db: TestDatabase["db"] = database.db,
  pollIntervalMs?: number,
) {
  const log = logger();
  const run = new OperationRunner<Job, JobError>(
    { db, logger: log.logger, clock, settings: { ...settings, operationDeadlinesMs } },
    {
      table: jobs as unknown as OperationsTable,
      subject: "queue",
      storedError: (failure) => failure,
      logFields: (job) => ({ jobId: job.id, queue: job.queue }),
    },
    instanceId,
    handlers,
    pollIntervalMs,
  );
  return { run, lines: log.lines };
}

/** A started runner whose loop has made its first pass and looks again only when woken (or in an hour). */
async function startedRunner(
  handlers: OperationHandlers<Job, JobError>,
  instanceId = "runner-a",
  db: TestDatabase["db"] = database.db,
) {
  const made = runner(handlers, instanceId, undefined, db, 3_600_000);
  const passes = vi.spyOn(made.run, "claim");
  made.run.start();
  await vi.waitFor(() => expect(passes).toHaveBeenCalled());
  await passes.mock.results[0]?.value;
  passes.mockRestore();
  return made;
}

async function add(id: string, queue: string, values: Partial<Job> = {}): Promise<void> {
  const now = clock.now();
  await database.db
    .insert(jobs)
    .values({ id, queue, kind: "work", runAfter: now, createdAt: now, updatedAt: now, ...values });
}

async function job(id: string): Promise<Job> {
  const [row] = await database.db.select().from(jobs).where(eq(jobs.id, id));
  if (!row) throw new Error(`no job ${id}`);
  return row;
}

describe("the durable-operation runner on a table of its own", () => {
  it("runs one operation per subject at a time, in request order, ids ordering one timestamp", async () => {
    await add("job-b", "q1");
    await add("job-a", "q1");
    clock.advance(1);
    await add("job-c", "q2");
    const { run } = runner({ perform: async () => undefined });
    expect((await run.claim())?.id).toBe("job-a");
    // job-b waits for job-a, whose lease is alive; the other subject's job runs beside it.
    expect((await run.claim())?.id).toBe("job-c");
    expect(await run.claim()).toBeNull();
  });

  it("records steps and the stored outcome; a retryable failure waits out its backoff on the clock", async () => {
    await add("job-1", "q1");
    let calls = 0;
    const failed: string[] = [];
    const finished: string[] = [];
    const { run } = runner({
      perform: async (_job, step) => {
        calls++;
        clock.advance(40);
        step("first", "detail");
        if (calls === 1) throw new ProvisionerError("backend_unavailable", "engine busy", true);
        return { result: { done: true } };
      },
      onFailed: async (row) => {
        failed.push(row.id);
      },
      onFinished: (row, outcome) => finished.push(`${row.id}:${outcome.status}`),
    });
    expect(await run.drain()).toBe(1);
    expect(await job("job-1")).toMatchObject({
      status: "pending",
      attempts: 1,
      error: { code: "backend_unavailable", message: "engine busy", retryable: true },
      lockedBy: null,
    });
    expect(await run.drain()).toBe(0);
    clock.advance(retryDelayMs(1));
    expect(await run.drain()).toBe(1);
    const done = await job("job-1");
    expect(done).toMatchObject({ status: "succeeded", attempts: 2, error: null, result: { done: true } });
    expect(done.steps).toEqual([
      expect.objectContaining({ name: "first", durationMs: 40, detail: "detail" }),
      expect.objectContaining({ name: "first", durationMs: 40, detail: "detail" }),
    ]);
    expect(done.finishedAt).toEqual(clock.now());
    expect(failed).toEqual([]);
    expect(finished).toEqual(["job-1:succeeded"]);
  });

  it("a failure for good calls onFailed, with the error text scrubbed of the secrets the attempt opened", async () => {
    await add("job-1", "q1");
    const failed: JobError[] = [];
    const { run } = runner({
      perform: async (_job, _step, scrub) => {
        scrub.learn({ env: { TOKEN: "s3cret-value" }, secretKeys: ["TOKEN"] });
        throw new ProvisionerError("invalid_spec", "bad token s3cret-value", false);
      },
      onFailed: async (_row, error) => {
        failed.push(error);
      },
    });
    await run.drain();
    expect(await job("job-1")).toMatchObject({ status: "failed", attempts: 1 });
    expect(failed).toHaveLength(1);
    expect(failed[0]?.code).toBe("invalid_spec");
    expect(failed[0]?.message).not.toContain("s3cret-value");
  });

  it("supersede ends without onFailed; defer waits without using an attempt", async () => {
    await add("job-s", "q1");
    await add("job-d", "q2");
    const failed: string[] = [];
    let deferred = 0;
    const { run } = runner({
      perform: async (row) => {
        if (row.id === "job-s") throw new OperationSuperseded("the subject is being deleted");
        if (deferred++ === 0) throw new OperationDeferred("waiting", 2_000);
        return undefined;
      },
      onFailed: async (row) => {
        failed.push(row.id);
      },
    });
    expect(await run.drain()).toBe(2);
    expect(await job("job-s")).toMatchObject({
      status: "failed",
      error: { code: "superseded", message: "the subject is being deleted", retryable: false },
    });
    expect(await job("job-d")).toMatchObject({ status: "pending", attempts: 0 });
    expect(await run.drain()).toBe(0);
    clock.advance(2_000);
    expect(await run.drain()).toBe(1);
    expect(await job("job-d")).toMatchObject({ status: "succeeded", attempts: 1 });
    expect(failed).toEqual([]);
  });

  it("quarantines an operation whose last attempt never finished, and runs a recovered one alone", async () => {
    const expired = new Date(clock.now().getTime() - 1);
    await add("job-poison", "q1", { status: "running", attempts: 3, lockedBy: "dead", lockedUntil: expired });
    await add("job-recovered", "q2", {
      status: "running",
      attempts: 1,
      lockedBy: "dead",
      lockedUntil: expired,
    });
    clock.advance(1);
    await add("job-next", "q3");
    const performed: string[] = [];
    const failed: JobError[] = [];
    const { run, lines } = runner({
      perform: async (row) => {
        performed.push(row.id);
        return undefined;
      },
      onFailed: async (_row, error) => {
        failed.push(error);
      },
    });
    expect((await run.claim())?.id).toBe("job-recovered");
    expect(await job("job-poison")).toMatchObject({ status: "failed", error: { code: QUARANTINED } });
    expect(failed.map((error) => error.code)).toEqual([QUARANTINED]);
    expect(lines.filter((line) => String(line.msg).startsWith("operation quarantined"))).toHaveLength(1);
    // Nothing is claimed beside the recovered operation.
    expect(await run.claim()).toBeNull();
    const recovered = await job("job-recovered");
    await run.execute(recovered);
    expect(await run.drain()).toBe(1);
    expect(performed).toEqual(["job-recovered", "job-next"]);
    expect(await job("job-recovered")).toMatchObject({ status: "succeeded", attempts: 2 });
  });

  it("another runner cannot finish an operation whose lease it does not hold", async () => {
    await add("job-1", "q1");
    const { run: first } = runner({ perform: async () => undefined }, "runner-a");
    const claimed = await first.claim();
    if (!claimed) throw new Error("nothing claimed");
    const { run: second } = runner({ perform: async () => undefined }, "runner-b");
    expect(await second.claim()).toBeNull();
    await second.execute(claimed);
    expect(await job("job-1")).toMatchObject({ status: "running", lockedBy: "runner-a" });
    await first.execute(claimed);
    expect(await job("job-1")).toMatchObject({ status: "succeeded", lockedBy: null });
  });

  it("abandons an attempt past its kind's deadline even if it ignores the signal, retries it, and drops its late result", async () => {
    await add("job-1", "q1");
    const signals: AbortSignal[] = [];
    let lateReturn: (value: { result: string }) => void = () => {};
    let lateWrite: "written" | "refused" | null = null;
    let lateFenced: "written" | "refused" | "failed" | null = null;
    let lateDone: () => void = () => {};
    const lateFinished = new Promise<void>((resolve) => {
      lateDone = resolve;
    });
    const { run } = runner(
      {
        perform: async (row, step, _scrub, attempt) => {
          signals.push(attempt.signal);
          if (row.attempts > 1) return { result: { done: row.attempts } };
          // A backend call that never returns and ignores its signal, until the test lets it come back late.
          const late = await new Promise<{ result: string }>((resolve) => {
            lateReturn = resolve;
          });
          step("late_step");
          try {
            attempt.ensureCurrent();
            lateWrite = "written";
          } catch {
            lateWrite = "refused";
          }
          try {
            await attempt.fenced((tx) => tx.insert(subjects).values({ queue: row.queue, state: "late" }));
            lateFenced = "written";
          } catch (error) {
            lateFenced = error instanceof AttemptSuperseded ? "refused" : "failed";
          }
          lateDone();
          return late;
        },
      },
      "runner-a",
      { work: 5 },
    );
    expect(await run.drain()).toBe(1);
    expect(signals[0]?.aborted).toBe(true);
    const hung = await job("job-1");
    expect(hung).toMatchObject({
      status: "pending",
      attempts: 1,
      lockedBy: null,
      error: {
        code: HUNG,
        message:
          "work did not finish within its deadline of 5 ms; attempt 1 of 3 was abandoned and the operation will be retried",
        retryable: true,
      },
    });
    expect(hung.runAfter).toEqual(new Date(clock.now().getTime() + retryDelayMs(1)));
    clock.advance(retryDelayMs(1));
    expect(await run.drain()).toBe(1);
    expect(signals[1]?.aborted).toBe(false);
    // The first attempt comes back now: its step, its write and its result go nowhere.
    lateReturn({ result: "late" });
    await lateFinished;
    expect(lateWrite).toBe("refused");
    expect(lateFenced).toBe("refused");
    expect(await database.db.select().from(subjects)).toEqual([]);
    const done = await job("job-1");
    expect(done).toMatchObject({ status: "succeeded", attempts: 2, error: null, result: { done: 2 } });
    expect(done.steps).toEqual([expect.objectContaining({ name: HUNG, detail: "attempt 1 of 3 abandoned" })]);
    expect(await countHungOperations(database.db, jobs as unknown as OperationsTable)).toBe(1);
  });

  it("stop gives an attempt in flight back at once, even one that ignores its signal; another runner resumes it", async () => {
    await add("job-1", "q1");
    const signals: AbortSignal[] = [];
    let started: () => void = () => {};
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    let lateReturn: () => void = () => {};
    let lateFenced: "written" | "refused" | "failed" | null = null;
    const handlers: OperationHandlers<Job, JobError> = {
      perform: async (row, step, _scrub, attempt) => {
        signals.push(attempt.signal);
        if (signals.length > 1) return { result: { done: row.attempts } };
        step("first_step");
        started();
        // A long backend call that ignores its signal (the deadline is the default 15 minutes).
        await new Promise<void>((resolve) => {
          lateReturn = resolve;
        });
        try {
          await attempt.fenced((tx) => tx.insert(subjects).values({ queue: row.queue, state: "late" }));
          lateFenced = "written";
        } catch (error) {
          lateFenced = error instanceof AttemptSuperseded ? "refused" : "failed";
        }
        return { result: "late" };
      },
    };
    const first = runner(handlers, "runner-a");
    first.run.start();
    await running;
    expect(await job("job-1")).toMatchObject({ status: "running", lockedBy: "runner-a", attempts: 1 });
    // Resolves although the attempt never returns: no wait for the lease or the deadline.
    await first.run.stop();
    expect(signals[0]?.aborted).toBe(true);
    expect(signals[0]?.reason).toBeInstanceOf(RunnerStopping);
    const released = await job("job-1");
    expect(released).toMatchObject({
      status: "pending",
      lockedBy: null,
      lockedUntil: null,
      attempts: 0,
      error: null,
    });
    expect(released.runAfter).toEqual(clock.now());
    expect(released.steps).toEqual([
      expect.objectContaining({ name: "first_step" }),
      expect.objectContaining({ name: RELEASED, detail: "attempt 1 given back: the process stopped" }),
    ]);
    expect(first.lines).toContainEqual(expect.objectContaining({ msg: "operation released at shutdown" }));

    const second = runner(handlers, "runner-b");
    expect(await second.run.drain()).toBe(1);
    expect(await job("job-1")).toMatchObject({ status: "succeeded", attempts: 1, result: { done: 1 } });
    // The given-back attempt comes back late: its fenced write is refused.
    lateReturn();
    await vi.waitFor(() => expect(lateFenced).toBe("refused"));
    expect(await database.db.select().from(subjects)).toEqual([]);
  });

  it("fails a hung operation once its attempts are spent, with an error naming the kind and the deadline", async () => {
    await add("job-1", "q1", { attempts: 2 });
    await add("job-2", "q2", { kind: "other" });
    const failed: JobError[] = [];
    const { run } = runner(
      {
        // Heeds the signal, like the backends: the abandoned call ends at once.
        perform: (row, _step, _scrub, attempt) =>
          row.id === "job-2"
            ? Promise.resolve(undefined)
            : new Promise((_resolve, reject) => {
                attempt.signal.addEventListener("abort", () => reject(attempt.signal.reason));
              }),
        onFailed: async (_row, error) => {
          failed.push(error);
        },
      },
      "runner-a",
      { work: 5 },
    );
    // job-2's kind has the default deadline: it finishes within it.
    expect(await run.drain()).toBe(2);
    const error = {
      code: HUNG,
      message: "work did not finish within its deadline of 5 ms; gave up after 3 attempts",
      retryable: false,
    };
    expect(await job("job-1")).toMatchObject({ status: "failed", attempts: 3, error, lockedBy: null });
    expect(failed).toEqual([error]);
    expect(await job("job-2")).toMatchObject({ status: "succeeded", error: null });
    expect(await countHungOperations(database.db, jobs as unknown as OperationsTable)).toBe(1);
  });

  it("a fenced write of an attempt whose row another runner claimed since changes nothing; the current one's lands", async () => {
    await add("job-1", "q1");
    let resume: () => void = () => {};
    const outcomes: string[] = [];
    const perform: OperationHandlers<Job, JobError>["perform"] = async (row, _step, _scrub, attempt) => {
      if (row.attempts === 1) {
        await new Promise<void>((resolve) => {
          resume = resolve;
        });
      }
      try {
        await attempt.fenced((tx) =>
          tx
            .insert(subjects)
            .values({ queue: row.queue, state: `written by attempt ${row.attempts}` })
            .onConflictDoUpdate({
              target: subjects.queue,
              set: { state: `written by attempt ${row.attempts}` },
            }),
        );
        outcomes.push(`attempt ${row.attempts} wrote`);
      } catch (error) {
        outcomes.push(
          `attempt ${row.attempts} ${error instanceof AttemptSuperseded ? "superseded" : "failed"}`,
        );
        throw error;
      }
      return undefined;
    };
    const { run: first, lines } = runner({ perform }, "runner-a");
    const claimed = await first.claim();
    if (!claimed) throw new Error("nothing claimed");
    const stalled = first.execute(claimed);
    // The first runner stalls past its lease; another claims the row and finishes it.
    clock.advance(settings.operationLeaseMs + 1);
    const { run: second } = runner({ perform }, "runner-b");
    expect(await second.drain()).toBe(1);
    expect(await job("job-1")).toMatchObject({ status: "succeeded", attempts: 2 });
    resume();
    await stalled;
    expect(outcomes).toEqual(["attempt 2 wrote", "attempt 1 superseded"]);
    const [subject] = await database.db.select().from(subjects).where(eq(subjects.queue, "q1"));
    expect(subject?.state).toBe("written by attempt 2");
    expect(await job("job-1")).toMatchObject({
      status: "succeeded",
      attempts: 2,
      error: null,
      lockedBy: null,
    });
    expect(lines.some((line) => String(line.msg).startsWith("attempt superseded"))).toBe(true);
  });

  it("runs an operation handed over as just queued at once, claimed by its id, once across replicas", async () => {
    const performed: string[] = [];
    // job-2 is held until the test has seen who holds it (it would finish, unlocked, before a busy test looked).
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const perform = async (row: Job) => {
      performed.push(row.id);
      if (row.id === "job-2") await held;
      return undefined;
    };
    await add("job-1", "q1");
    const { run: notStarted } = runner({ perform });
    expect(await notStarted.runQueued("job-1")).toBe(false);
    expect(await job("job-1")).toMatchObject({ status: "pending", attempts: 0, lockedBy: null });
    await database.db.delete(jobs);

    const other = await createDatabase({ url: database.url, maxConnections: 2 });
    const { run: a } = await startedRunner({ perform }, "replica-a");
    const { run: b } = await startedRunner({ perform }, "replica-b", other.db);
    try {
      await add("job-2", "q1");
      // The loops are idle for an hour: only the hand-over can take it now.
      expect(await a.runQueued("job-2")).toBe(true);
      expect(await job("job-2")).toMatchObject({ lockedBy: "replica-a", attempts: 1 });
      release();
      await vi.waitFor(async () => expect((await job("job-2")).status).toBe("succeeded"));

      // Fewer than a runner's slots (8): with none free, the hand-over wakes the loop instead.
      for (let i = 0; i < 5; i++) await add(`job-3-${i}`, `q3-${i}`);
      const taken = await Promise.all(
        Array.from({ length: 5 }, (_, i) => [a, b].map((run) => run.runQueued(`job-3-${i}`))).flat(),
      );
      // A loop woken by a finished operation may take one first: never two takers, and each runs once.
      for (let i = 0; i < 5; i++) {
        expect([taken[2 * i], taken[2 * i + 1]].filter(Boolean).length).toBeLessThanOrEqual(1);
      }
      await vi.waitFor(async () => {
        const rows = await database.db.select().from(jobs);
        expect(rows.every((row) => row.status === "succeeded" && row.attempts === 1)).toBe(true);
      });
      expect(performed.sort()).toEqual(["job-2", ...Array.from({ length: 5 }, (_, i) => `job-3-${i}`)]);
    } finally {
      release();
      await Promise.all([a.stop(), b.stop()]);
      await other.close();
    }
  });

  it("leaves a queued operation to the loop while a lease has lapsed or an earlier one of its subject waits", async () => {
    const performed: string[] = [];
    const { run } = await startedRunner({
      perform: async (row) => {
        performed.push(row.id);
        return undefined;
      },
    });
    try {
      const expired = new Date(clock.now().getTime() - 1);
      await add("job-recovered", "q1", {
        status: "running",
        attempts: 1,
        lockedBy: "dead",
        lockedUntil: expired,
      });
      clock.advance(1);
      await add("job-new", "q2");
      // The loop, woken instead, recovers the lapsed one first, alone.
      expect(await run.runQueued("job-new")).toBe(false);
      await vi.waitFor(async () => expect((await job("job-new")).status).toBe("succeeded"));
      expect(performed).toEqual(["job-recovered", "job-new"]);

      clock.advance(1);
      await add("job-earlier", "q3");
      clock.advance(1);
      await add("job-later", "q3");
      expect(await run.runQueued("job-later")).toBe(false);
      await vi.waitFor(async () => expect((await job("job-later")).status).toBe("succeeded"));
      expect(performed).toEqual(["job-recovered", "job-new", "job-earlier", "job-later"]);
    } finally {
      await run.stop();
    }
  });

  it("two replicas claiming at once on their own connections never take the same operation", async () => {
    const other = await createDatabase({ url: database.url, maxConnections: 4 });
    try {
      await other.db.execute(sql`SELECT 1`); // its connection open, so both start together
      for (let i = 0; i < 40; i++) await add(`job-${String(i).padStart(2, "0")}`, `q${i}`);
      const replicas = [
        runner({ perform: async () => undefined }, "replica-a"),
        runner({ perform: async () => undefined }, "replica-b", undefined, other.db),
      ];
      const claimedBy = await Promise.all(
        replicas.map(async ({ run }) => {
          const ids: string[] = [];
          const claimers = Array.from({ length: 3 }, async () => {
            for (let row = await run.claim(); row; row = await run.claim()) ids.push(row.id);
          });
          await Promise.all(claimers);
          return ids;
        }),
      );
      const [a = [], b = []] = claimedBy;
      expect(a.length).toBeGreaterThan(0);
      expect(b.length).toBeGreaterThan(0);
      expect([...a, ...b].sort()).toEqual(
        Array.from({ length: 40 }, (_, i) => `job-${String(i).padStart(2, "0")}`),
      );
      const rows = await database.db.select().from(jobs);
      expect(rows.every((row) => row.attempts === 1)).toBe(true);
    } finally {
      await other.close();
    }
  });
});

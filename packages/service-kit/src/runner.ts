import { describeFailure, Scrubber, type StepReporter } from "@molecule/provisioner-core";
import { and, asc, eq, gte, inArray, lt, lte, ne, notExists, or, type SQL, sql } from "drizzle-orm";
import type { AnyPgColumn, PgDatabase, PgQueryResultHKT, PgTable } from "drizzle-orm/pg-core";
import { alias } from "drizzle-orm/pg-core";
import type { Logger } from "pino";
import type { AttemptOutcome, OperationMetrics } from "./metrics.ts";
import {
  ClaimGate,
  keepLease,
  quarantinedError,
  retryDelayMs,
  StepRecorder,
  WorkLoop,
} from "./operations.ts";

/** The operation no longer applies (its subject is being deleted): it ends as failed with code `superseded`. */
export class OperationSuperseded extends Error {}

/** Not a failure: the operation must wait for something else; it runs again after `delayMs` without using an attempt. */
export class OperationDeferred extends Error {
  constructor(
    message: string,
    readonly delayMs: number,
  ) {
    super(message);
  }
}

/** Why an operation failed, as the runner describes it before the table stores it. */
export interface OperationFailure {
  code: string;
  message: string;
  retryable: boolean;
}

/** The columns every operations table has, under these property names. */
type RunnerColumn =
  | "id"
  | "status"
  | "attempts"
  | "steps"
  | "error"
  | "lockedBy"
  | "lockedUntil"
  | "runAfter"
  | "createdAt"
  | "updatedAt"
  | "finishedAt";

/** A drizzle table of durable operations: the runner's columns plus one naming the operation's subject. */
export type OperationsTable = PgTable & Record<RunnerColumn, AnyPgColumn>;

/** The least a row of such a table carries. */
export interface OperationRowBase {
  id: string;
  kind: string;
  attempts: number;
}

/** Which table the runner works on and how its rows differ. */
export interface OperationTableAdapter<Row extends OperationRowBase, StoredError> {
  table: OperationsTable;
  /**
   * The property naming what one operation at a time may act on (a workspace, an org); operations of one subject
   * run one at a time, in the order they were asked for.
   */
  subject: string;
  /** The error as this table stores it. */
  storedError: (failure: OperationFailure) => StoredError;
  /** Log fields naming the row (its ids). */
  logFields: (row: Row) => Record<string, unknown>;
}

export interface OperationRunnerSettings {
  operationLeaseMs: number;
  operationMaxAttempts: number;
  /**
   * How long one attempt of each kind may run before it is abandoned as hung (see `OperationRunner`); a kind not
   * listed gets `DEFAULT_OPERATION_DEADLINE_MS`.
   */
  operationDeadlinesMs?: Readonly<Record<string, number>>;
}

/** The deadline of an operation kind no setting names. */
export const DEFAULT_OPERATION_DEADLINE_MS = 15 * 60_000;

/** The error code of an attempt abandoned at its deadline, and the step recorded on its row when it happened. */
export const HUNG = "hung";

/** The reason an abandoned attempt's signal aborts with; the row's error says the same. */
export class OperationHung extends Error {
  constructor(
    readonly kind: string,
    readonly deadlineMs: number,
  ) {
    super(`${kind} did not finish within its deadline of ${duration(deadlineMs)}`);
  }
}

function duration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

/** The step recorded on an operation's row when its attempt was given back at shutdown. */
export const RELEASED = "released";

/** The reason an attempt's signal aborts with when its runner stops: the operation is left for the next runner. */
export class RunnerStopping extends Error {
  constructor() {
    super("the process is shutting down; the operation is left for another runner");
  }
}

/**
 * A write of an attempt that is no longer its operation's (abandoned at its deadline, or its row claimed by another
 * runner since): it was not made, and the attempt ends without touching the row.
 */
export class AttemptSuperseded extends Error {}

// biome-ignore lint/suspicious/noExplicitAny: both apps' schemas are accepted.
export type RunnerDb = PgDatabase<PgQueryResultHKT, any>;

/**
 * What one attempt is given besides its row: `signal` aborts when the attempt is abandoned at its deadline (pass it
 * to every backend call), and `ensureCurrent` throws once it has, so an abandoned attempt that comes back late
 * writes nothing (call it before each write the attempt makes outside the runner). `fenced` is the stronger form
 * for the writes that decide the subject's state: it runs `write` in a transaction that first locks the operation's
 * row as this attempt holds it (leased to this runner, same attempt number), so an attempt that was abandoned, or
 * whose lease lapsed and whose row another runner claimed, gets `AttemptSuperseded` and writes nothing; a claim by
 * another runner waits for the transaction, so the check and the write are one.
 */
export interface AttemptContext {
  signal: AbortSignal;
  ensureCurrent(): void;
  fenced<T>(write: (tx: RunnerDb) => Promise<T>): Promise<T>;
}

export interface OperationRunnerDeps {
  db: RunnerDb;
  logger: Logger;
  clock: { now(): Date };
  settings: OperationRunnerSettings;
  /** Each attempt's kind, outcome and duration (`molecule_operation_attempt_duration_seconds`). */
  metrics?: OperationMetrics;
}

/**
 * What an app gives the runner: the work of one operation kind, called again on every attempt (so it must be
 * idempotent), and what follows an operation's end. `perform` adds every secret it opens to `scrub`, so that no
 * failure, step detail or log line carries it; what it returns is stored on the row when it succeeds.
 */
export interface OperationHandlers<Row extends OperationRowBase, StoredError> {
  perform: (
    row: Row,
    step: StepReporter,
    scrub: Scrubber,
    attempt: AttemptContext,
  ) => Promise<Record<string, unknown> | undefined>;
  /** After an operation ended as failed for good (also when quarantined); not after `OperationSuperseded`. */
  onFailed?: (row: Row, error: StoredError) => Promise<void>;
  /** After any operation ended (succeeded, failed, superseded or quarantined). */
  onFinished?: (row: Row, outcome: { status: "succeeded" | "failed"; error: StoredError | null }) => void;
  /** Told of each step as it is recorded (its `detail` already scrubbed). */
  onStep?: (row: Row, step: { name: string; durationMs: number }) => void;
  /** The log text of an unexpected error (one that is not a backend error). */
  unexpectedMessage?: string;
}

type Claimed<Row> =
  | { decision: "run" | "run_alone"; row: Row }
  | { decision: "quarantine"; row: Row; abandonedBy: string | null }
  | null;

/**
 * Runs durable operations of one table: claims one row at a time with `FOR UPDATE SKIP LOCKED` (one operation per
 * subject at a time, in the order asked, ties of one timestamp broken by id), holds it under a lease it keeps
 * renewing, records each step as it finishes, retries retryable backend errors with exponential backoff. A process
 * killed mid-operation leaves a lease that expires; whoever claims the row next runs it again (alone, and only while
 * attempts are left: see ClaimGate), and every backend call is idempotent, so it converges.
 *
 * Every kind has a deadline (`operationDeadlinesMs`). An attempt still running past it, lease alive or not, is hung:
 * its signal aborts, the runner stops waiting for it (whether or not the backend call heeds the signal), records a
 * `hung` step and error on the row, and retries it like a retryable failure or fails it once its attempts are spent.
 * Whatever the abandoned attempt does later is fenced off: its steps are dropped, `ensureCurrent` throws, and every
 * write the runner makes for an attempt matches the row's attempt number as well as the lease holder.
 *
 * `stop` (SIGTERM) does not wait for attempts in flight: it aborts their signals with `RunnerStopping` and gives
 * their rows back (pending, unlocked, the attempt refunded, a `released` step recorded), fenced like a hung attempt,
 * so another replica or the next start resumes them at once instead of after the lease or the deadline.
 */
export class OperationRunner<Row extends OperationRowBase, StoredError> extends WorkLoop<Row> {
  private readonly gate = new ClaimGate();
  /** The abort controllers of the attempts in flight, for `stop`. */
  private readonly inFlight = new Set<AbortController>();
  private stopping = false;

  constructor(
    private readonly deps: OperationRunnerDeps,
    private readonly adapter: OperationTableAdapter<Row, StoredError>,
    private readonly instanceId: string,
    private readonly handlers: OperationHandlers<Row, StoredError>,
    pollIntervalMs = 500,
  ) {
    super({
      claim: () => this.claim(),
      execute: (operation) => this.execute(operation),
      logger: deps.logger,
      pollIntervalMs,
      name: "operation",
    });
  }

  /** Gives back every attempt in flight (see the class comment), then stops claiming. */
  override async stop(): Promise<void> {
    this.stopping = true;
    for (const attempt of this.inFlight) attempt.abort(new RunnerStopping());
    await super.stop();
  }

  override start(): void {
    this.stopping = false;
    super.start();
  }

  private get t(): OperationsTable {
    return this.adapter.table;
  }

  private column(table: PgTable, name: string): AnyPgColumn {
    return (table as unknown as Record<string, AnyPgColumn>)[name] as AnyPgColumn;
  }

  // Drizzle cannot type a `set` on a table it only knows as a generic one; the keys are the runner's columns.
  private update(values: Record<string, unknown>, where: SQL | undefined) {
    // biome-ignore lint/suspicious/noExplicitAny: see above.
    return (this.deps.db as PgDatabase<PgQueryResultHKT, any>)
      .update(this.t)
      .set(values as never)
      .where(where);
  }

  /** The row as this attempt claimed it: still leased to this runner, and not claimed again since. */
  private held(operation: Row): SQL | undefined {
    return and(
      eq(this.t.id, operation.id),
      eq(this.t.lockedBy, this.instanceId),
      eq(this.t.attempts, operation.attempts),
    );
  }

  private deadlineMs(kind: string): number {
    return this.deps.settings.operationDeadlinesMs?.[kind] ?? DEFAULT_OPERATION_DEADLINE_MS;
  }

  /**
   * Takes the next operation this process may run, or null. A row whose last allowed attempt never finished is
   * quarantined on the way (see ClaimGate) and the search goes on.
   */
  async claim(): Promise<Row | null> {
    for (;;) {
      if (!this.gate.open) return null;
      const found = await this.claimOne();
      if (!found) return null;
      if (found.decision === "quarantine") {
        await this.quarantined(found.row, found.abandonedBy);
        continue;
      }
      this.gate.claimed(found.row.id, found.decision);
      return found.row;
    }
  }

  /**
   * An operation this process has just queued (its row committed): claimed by its id in one statement and run at
   * once, beside what runs already, instead of being found by the loop after a wake (a claim transaction of its own).
   * The claim is the loop's, narrowed to that row: it must be pending and due, and first of its subject, and it is
   * left to the loop (woken instead) while this runner runs an operation alone, or while any operation's lease has
   * lapsed (the loop recovers those first, alone). Claimed once all the same: a replica that took it first leaves it
   * `running`, and this statement then changes nothing. Resolves true once this runner has claimed it.
   */
  async runQueued(id: string): Promise<boolean> {
    const taken = await this.offer(async () => {
      if (!this.gate.open) return null;
      // Held from here, so that a claim by the loop meanwhile neither takes the row nor runs a recovered one alone.
      this.gate.claimed(id, "run");
      const row = await this.claimQueued(id).catch((error: unknown) => {
        this.gate.finished(id);
        throw error;
      });
      if (!row) this.gate.finished(id);
      return row;
    });
    return taken !== null;
  }

  private async claimQueued(id: string): Promise<Row | null> {
    const { db, settings, clock } = this.deps;
    const t = this.t;
    const now = clock.now();
    const lapsed = alias(t, "lapsed") as unknown as OperationsTable;
    const [claimed] = await this.update(
      {
        status: "running",
        lockedBy: this.instanceId,
        lockedUntil: new Date(now.getTime() + settings.operationLeaseMs),
        attempts: sql`${t.attempts} + 1`,
        updatedAt: now,
      },
      and(
        eq(t.id, id),
        eq(t.status, "pending"),
        lte(t.runAfter, now),
        this.firstOfSubject(db, now),
        notExists(
          db
            .select({ one: sql`1` })
            .from(lapsed)
            .where(and(eq(lapsed.status, "running"), lt(lapsed.lockedUntil, now))),
        ),
      ),
    ).returning();
    return (claimed as Row | undefined) ?? null;
  }

  /** The row's subject has no earlier operation pending or running, and none running under a live lease. */
  private firstOfSubject(db: RunnerDb, now: Date): SQL {
    const t = this.t;
    const subject = this.column(t, this.adapter.subject);
    const earlier = alias(t, "earlier") as unknown as OperationsTable;
    const earlierSubject = this.column(earlier, this.adapter.subject);
    return notExists(
      db
        .select({ one: sql`1` })
        .from(earlier)
        .where(
          and(
            eq(earlierSubject, subject),
            ne(earlier.id, t.id),
            inArray(earlier.status, ["pending", "running"]),
            or(
              lt(earlier.createdAt, t.createdAt),
              // Ids sort by time too: they order requests made in the same millisecond.
              and(eq(earlier.createdAt, t.createdAt), lt(earlier.id, t.id)),
              and(eq(earlier.status, "running"), gte(earlier.lockedUntil, now)),
            ),
          ),
        ),
    );
  }

  private claimOne(): Promise<Claimed<Row>> {
    const { db, settings, clock } = this.deps;
    const t = this.t;
    return db.transaction(async (tx) => {
      const now = clock.now();
      const [candidate] = await tx
        .select({ id: t.id, status: t.status, attempts: t.attempts, lockedBy: t.lockedBy })
        .from(t)
        .where(
          and(
            or(
              and(eq(t.status, "pending"), lte(t.runAfter, now)),
              and(eq(t.status, "running"), lt(t.lockedUntil, now)),
            ),
            // One operation per subject at a time, in the order they were asked for.
            this.firstOfSubject(tx, now),
          ),
        )
        .orderBy(asc(t.createdAt), asc(t.id))
        .limit(1)
        .for("update", { skipLocked: true });
      if (!candidate) return null;
      const row = candidate as { id: string; status: string; attempts: number; lockedBy: string | null };
      const decision = this.gate.decide(row, settings.operationMaxAttempts);
      if (decision === "quarantine") {
        const error = this.adapter.storedError({
          ...quarantinedError(row.attempts, settings.operationMaxAttempts),
          retryable: false,
        });
        const [quarantined] = await tx
          .update(t)
          .set({
            status: "failed",
            error,
            lockedBy: null,
            lockedUntil: null,
            updatedAt: now,
            finishedAt: now,
          } as never)
          .where(eq(t.id, row.id))
          .returning();
        return quarantined ? { decision, row: quarantined as Row, abandonedBy: row.lockedBy } : null;
      }
      if (decision !== "run" && decision !== "run_alone") return null;
      const [claimed] = await tx
        .update(t)
        .set({
          status: "running",
          lockedBy: this.instanceId,
          lockedUntil: new Date(now.getTime() + settings.operationLeaseMs),
          attempts: sql`${t.attempts} + 1`,
          updatedAt: now,
        } as never)
        .where(eq(t.id, row.id))
        .returning();
      return claimed ? { decision, row: claimed as Row } : null;
    });
  }

  /** A quarantined operation fails like any other that failed for good. */
  private async quarantined(operation: Row, abandonedBy: string | null): Promise<void> {
    const error = (operation as unknown as { error: StoredError }).error;
    const { message } = error as unknown as { message: string };
    this.deps.logger.error(
      {
        ...this.adapter.logFields(operation),
        kind: operation.kind,
        attempts: operation.attempts,
        abandonedBy,
      },
      `operation quarantined: ${message}`,
    );
    this.handlers.onFinished?.(operation, { status: "failed", error });
    await this.handlers.onFailed?.(operation, error);
  }

  async execute(operation: Row): Promise<void> {
    const { logger, settings, clock } = this.deps;
    const log = logger.child({ ...this.adapter.logFields(operation), kind: operation.kind });
    const releaseLease = keepLease(
      settings.operationLeaseMs,
      () =>
        this.update(
          { lockedUntil: new Date(clock.now().getTime() + settings.operationLeaseMs) },
          this.held(operation),
        ),
      (error) => log.warn({ err: error }, "lease renewal failed"),
    );
    const deadlineMs = this.deadlineMs(operation.kind);
    const started = performance.now();
    let outcome: AttemptOutcome = "failed";
    const abandon = new AbortController();
    this.inFlight.add(abandon);
    // Claimed while the runner was stopping: given back without running.
    if (this.stopping) abandon.abort(new RunnerStopping());
    // Settles when the attempt is abandoned: at its deadline, or when the runner stops.
    const abandoned = new Promise<typeof HUNG>((resolve) => {
      abandon.signal.addEventListener("abort", () => resolve(HUNG), { once: true });
      if (abandon.signal.aborted) resolve(HUNG);
    });
    const deadlineTimer = setTimeout(
      () => abandon.abort(new OperationHung(operation.kind, deadlineMs)),
      deadlineMs,
    );
    const attempt: AttemptContext = {
      signal: abandon.signal,
      ensureCurrent: () => abandon.signal.throwIfAborted(),
      fenced: (write) => this.fenced(operation, abandon.signal, write),
    };
    // Learns the secrets the attempt opens, so none reaches the row, an event or the log.
    const scrub = new Scrubber();
    // Appends finished steps to the operation row in order, each with its duration.
    const recorder = new StepRecorder(
      (step) =>
        this.update(
          { steps: sql`${this.t.steps} || ${JSON.stringify([step])}::jsonb`, updatedAt: clock.now() },
          eq(this.t.id, operation.id),
        ),
      this.handlers.onStep
        ? (step) => this.handlers.onStep?.(operation, { name: step.name, durationMs: step.durationMs })
        : undefined,
      () => clock.now().getTime(),
    );
    try {
      const report = recorder.reporter();
      // An abandoned attempt's late steps are not its operation's any more.
      const step: StepReporter = (name, detail) => {
        if (!abandon.signal.aborted) report(name, detail === undefined ? undefined : scrub.text(detail));
      };
      const work = abandon.signal.aborted
        ? Promise.reject(abandon.signal.reason)
        : this.handlers.perform(operation, step, scrub, attempt);
      const ended = await Promise.race([work.then((stored) => ({ stored })), abandoned]);
      clearTimeout(deadlineTimer);
      if (abandon.signal.aborted) {
        // The late result or error of the abandoned attempt is dropped (and must not end the process).
        work.catch(() => {});
        await recorder.flush().catch(() => {});
        outcome = await this.abandoned(operation, abandon.signal, deadlineMs, log);
        return;
      }
      await recorder.flush();
      const stored = ended === HUNG ? undefined : ended.stored;
      await this.finish(operation, "succeeded", null, stored ?? {});
      outcome = "succeeded";
      log.info({ attempts: operation.attempts }, "operation succeeded");
    } catch (error) {
      await recorder.flush().catch(() => {});
      if (abandon.signal.aborted) {
        outcome = await this.abandoned(operation, abandon.signal, deadlineMs, log);
      } else if (error instanceof AttemptSuperseded) {
        // Another runner holds the row now: its attempt decides, and this one leaves the row alone.
        outcome = "overtaken";
        log.warn({ attempts: operation.attempts }, `attempt superseded: ${error.message}`);
      } else outcome = await this.fail(operation, error, log, scrub);
    } finally {
      this.deps.metrics?.observeAttempt(operation.kind, outcome, (performance.now() - started) / 1000);
      clearTimeout(deadlineTimer);
      releaseLease();
      this.inFlight.delete(abandon);
      this.gate.finished(operation.id);
    }
  }

  /** An attempt whose signal aborted: given back when its runner stopped, else hung at its deadline. */
  private async abandoned(
    operation: Row,
    signal: AbortSignal,
    deadlineMs: number,
    log: Logger,
  ): Promise<AttemptOutcome> {
    if (signal.reason instanceof RunnerStopping) {
      await this.release(operation, log);
      return "released";
    }
    await this.hung(operation, deadlineMs, log);
    return "hung";
  }

  /**
   * Gives an attempt back at shutdown: a `released` step on the row, then pending again at once, unlocked, with the
   * attempt refunded (it did not fail; the process stopped). Only while this attempt still holds the row.
   */
  private async release(operation: Row, log: Logger): Promise<void> {
    const now = this.deps.clock.now();
    const released = await this.update(
      {
        status: "pending",
        lockedBy: null,
        lockedUntil: null,
        runAfter: now,
        attempts: sql`${this.t.attempts} - 1`,
        steps: sql`${this.t.steps} || ${JSON.stringify([
          {
            name: RELEASED,
            startedAt: now.toISOString(),
            durationMs: 0,
            detail: `attempt ${operation.attempts} given back: the process stopped`,
          },
        ])}::jsonb`,
        updatedAt: now,
      },
      this.held(operation),
    ).returning({ id: this.t.id });
    if (released.length > 0) log.info({ attempts: operation.attempts }, "operation released at shutdown");
  }

  /** See `AttemptContext.fenced`. */
  private async fenced<T>(
    operation: Row,
    abandoned: AbortSignal,
    write: (tx: RunnerDb) => Promise<T>,
  ): Promise<T> {
    if (abandoned.aborted) throw new AttemptSuperseded("the attempt was abandoned at its deadline");
    return this.deps.db.transaction(async (tx) => {
      const held = await tx.select({ id: this.t.id }).from(this.t).where(this.held(operation)).for("update");
      if (held.length === 0) {
        throw new AttemptSuperseded(`operation ${operation.id} is no longer held by this attempt`);
      }
      if (abandoned.aborted) throw new AttemptSuperseded("the attempt was abandoned at its deadline");
      return write(tx);
    });
  }

  /**
   * An attempt past its deadline: a `hung` step on the row (it stays there, so hangs can be counted whatever the
   * operation's end), then a retry after the usual backoff, or failure with a `hung` error once attempts are spent.
   */
  private async hung(operation: Row, deadlineMs: number, log: Logger): Promise<void> {
    const { settings, clock } = this.deps;
    const now = clock.now();
    const reason = new OperationHung(operation.kind, deadlineMs).message;
    const attempts = `attempt ${operation.attempts} of ${settings.operationMaxAttempts}`;
    const marked = await this.update(
      {
        steps: sql`${this.t.steps} || ${JSON.stringify([
          {
            name: HUNG,
            startedAt: now.toISOString(),
            durationMs: deadlineMs,
            detail: `${attempts} abandoned`,
          },
        ])}::jsonb`,
        updatedAt: now,
      },
      this.held(operation),
    ).returning({ id: this.t.id });
    // Another runner took the row over (this one's lease had lapsed): its attempt decides.
    if (marked.length === 0) return;
    if (operation.attempts < settings.operationMaxAttempts) {
      const delay = retryDelayMs(operation.attempts);
      const error = this.adapter.storedError({
        code: HUNG,
        message: `${reason}; ${attempts} was abandoned and the operation will be retried`,
        retryable: true,
      });
      log.warn({ attempts: operation.attempts, deadlineMs, retryInMs: delay }, "operation hung; will retry");
      await this.reschedule(operation, new Date(now.getTime() + delay), error, false);
      return;
    }
    const error = this.adapter.storedError({
      code: HUNG,
      message: `${reason}; gave up after ${settings.operationMaxAttempts} attempts`,
      retryable: false,
    });
    log.error({ attempts: operation.attempts, deadlineMs }, "operation hung; failed");
    if (await this.finish(operation, "failed", error)) {
      await this.handlers.onFailed?.(operation, error);
    }
  }

  /** Retries, reschedules or fails the operation after an attempt's error; says which. */
  private async fail(operation: Row, error: unknown, log: Logger, scrub: Scrubber): Promise<AttemptOutcome> {
    const now = this.deps.clock.now();
    if (error instanceof OperationSuperseded) {
      const stored = this.adapter.storedError({
        code: "superseded",
        message: error.message,
        retryable: false,
      });
      await this.finish(operation, "failed", stored);
      return "superseded";
    }
    if (error instanceof OperationDeferred) {
      await this.reschedule(operation, new Date(now.getTime() + error.delayMs), null, true);
      return "deferred";
    }
    const report = describeFailure(
      error,
      this.handlers.unexpectedMessage ?? "unexpected error; see the service log for details",
      scrub,
    );
    const failure = this.adapter.storedError({
      code: report.code,
      message: report.message,
      retryable: report.retryable,
    });
    if (report.retryable && operation.attempts < this.deps.settings.operationMaxAttempts) {
      const delay = retryDelayMs(operation.attempts);
      log.warn(
        { ...report.log, attempts: operation.attempts, retryInMs: delay },
        "operation failed; will retry",
      );
      await this.reschedule(operation, new Date(now.getTime() + delay), failure, false);
      return "retrying";
    }
    log.error({ ...report.log, attempts: operation.attempts }, "operation failed");
    if (await this.finish(operation, "failed", failure)) {
      await this.handlers.onFailed?.(operation, failure);
    }
    return "failed";
  }

  private async reschedule(
    operation: Row,
    runAfter: Date,
    error: StoredError | null,
    refundAttempt: boolean,
  ): Promise<void> {
    await this.update(
      {
        status: "pending",
        lockedBy: null,
        lockedUntil: null,
        runAfter,
        ...(error ? { error } : {}),
        ...(refundAttempt ? { attempts: sql`${this.t.attempts} - 1` } : {}),
        updatedAt: this.deps.clock.now(),
      },
      this.held(operation),
    );
  }

  /** Ends the operation if this runner still holds it; false when it lost the lease (or the row is gone). */
  private async finish(
    operation: Row,
    status: "succeeded" | "failed",
    error: StoredError | null,
    stored: Record<string, unknown> = {},
  ): Promise<boolean> {
    const now = this.deps.clock.now();
    const finished = await this.update(
      { ...stored, status, error, lockedBy: null, lockedUntil: null, updatedAt: now, finishedAt: now },
      this.held(operation),
    ).returning({ id: this.t.id });
    if (finished.length === 0) return false;
    this.handlers.onFinished?.(operation, { status, error });
    return true;
  }
}

/**
 * How many operations of `table` had at least one attempt abandoned as hung (a `hung` step on the row), whatever
 * their end; `since` counts only those created from then on. Rows pruned by retention are no longer counted.
 */
export async function countHungOperations(
  // biome-ignore lint/suspicious/noExplicitAny: both apps' schemas are accepted.
  db: PgDatabase<PgQueryResultHKT, any>,
  table: OperationsTable,
  since?: Date,
): Promise<number> {
  const [row] = await db
    .select({ count: sql<number>`count(*)::int` })
    .from(table)
    .where(
      and(
        sql`${table.steps} @> ${JSON.stringify([{ name: HUNG }])}::jsonb`,
        since ? gte(table.createdAt, since) : undefined,
      ),
    );
  return row?.count ?? 0;
}

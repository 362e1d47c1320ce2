import { describeFailure, Scrubber, type StepReporter } from "@molecule/provisioner-core";
import {
  ClaimGate,
  keepLease,
  quarantinedError,
  retryDelayMs,
  StepRecorder,
  WorkLoop,
} from "@molecule/service-kit/operations";
import { and, asc, eq, gte, inArray, lt, lte, ne, notExists, or, sql } from "drizzle-orm";
import { alias } from "drizzle-orm/pg-core";
import { type CpOperationError, type CpOperationRow, cpOperations } from "../db/schema.ts";
import type { ControlPlaneDeps } from "./deps.ts";

/** The operation no longer applies (its org is being deleted): it ends as failed with code `superseded`. */
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

export interface OperationOutcome {
  result?: { suspended?: boolean; reason?: string };
}

/**
 * Does the work of one operation kind; called again on every attempt, so it must be idempotent. Every secret it opens
 * (a spec's env, a tenant's tokens) is added to `scrub`, so that no failure, step detail or log line carries it.
 */
export type Perform = (
  operation: CpOperationRow,
  step: StepReporter,
  scrub: Scrubber,
) => Promise<OperationOutcome | undefined>;

/** What happens when an operation fails for good (marks the workspace or org failed). */
export type OnFailed = (operation: CpOperationRow, error: CpOperationError) => Promise<void>;

/**
 * Runs durable operations: claims one row at a time with `FOR UPDATE SKIP LOCKED` (one operation per subject —
 * a workspace, or an org — at a time, in the order asked), holds it under a lease it keeps renewing, records each
 * step as it finishes, retries retryable backend errors with exponential backoff. A process killed mid-operation
 * leaves a lease that expires; whoever claims the row next runs it again (alone, and only while attempts are left:
 * see ClaimGate), and every backend call is idempotent.
 */
export class OperationRunner extends WorkLoop<CpOperationRow> {
  private readonly gate = new ClaimGate();

  constructor(
    private readonly deps: ControlPlaneDeps,
    private readonly instanceId: string,
    private readonly perform: Perform,
    private readonly onFailed: OnFailed,
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

  /**
   * Takes the next operation this process may run, or null. A row whose last allowed attempt never finished is
   * quarantined on the way (see ClaimGate) and the search goes on.
   */
  async claim(): Promise<CpOperationRow | null> {
    for (;;) {
      if (!this.gate.open) return null;
      const found = await this.claimOne();
      if (!found) return null;
      if (found.decision === "quarantine") {
        await this.quarantined(found.row, found.error, found.abandonedBy);
        continue;
      }
      this.gate.claimed(found.row.id, found.decision);
      return found.row;
    }
  }

  private claimOne(): Promise<
    | { decision: "run" | "run_alone"; row: CpOperationRow }
    | { decision: "quarantine"; row: CpOperationRow; error: CpOperationError; abandonedBy: string | null }
    | null
  > {
    const { db, settings, clock } = this.deps;
    const earlier = alias(cpOperations, "earlier");
    return db.transaction(async (tx) => {
      const now = clock.now();
      const [candidate] = await tx
        .select({
          id: cpOperations.id,
          status: cpOperations.status,
          attempts: cpOperations.attempts,
          lockedBy: cpOperations.lockedBy,
        })
        .from(cpOperations)
        .where(
          and(
            or(
              and(eq(cpOperations.status, "pending"), lte(cpOperations.runAfter, now)),
              and(eq(cpOperations.status, "running"), lt(cpOperations.lockedUntil, now)),
            ),
            notExists(
              tx
                .select({ one: sql`1` })
                .from(earlier)
                .where(
                  and(
                    eq(earlier.subject, cpOperations.subject),
                    ne(earlier.id, cpOperations.id),
                    inArray(earlier.status, ["pending", "running"]),
                    or(
                      lt(earlier.createdAt, cpOperations.createdAt),
                      // Ids sort by time too: they order requests made in the same millisecond.
                      and(eq(earlier.createdAt, cpOperations.createdAt), lt(earlier.id, cpOperations.id)),
                      and(eq(earlier.status, "running"), gte(earlier.lockedUntil, now)),
                    ),
                  ),
                ),
            ),
          ),
        )
        .orderBy(asc(cpOperations.createdAt), asc(cpOperations.id))
        .limit(1)
        .for("update", { skipLocked: true });
      if (!candidate) return null;
      const decision = this.gate.decide(candidate, settings.operationMaxAttempts);
      if (decision === "quarantine") {
        const error: CpOperationError = {
          ...quarantinedError(candidate.attempts, settings.operationMaxAttempts),
          retryable: false,
        };
        const [quarantined] = await tx
          .update(cpOperations)
          .set({
            status: "failed",
            error,
            lockedBy: null,
            lockedUntil: null,
            updatedAt: now,
            finishedAt: now,
          })
          .where(eq(cpOperations.id, candidate.id))
          .returning();
        return quarantined ? { decision, row: quarantined, error, abandonedBy: candidate.lockedBy } : null;
      }
      if (decision !== "run" && decision !== "run_alone") return null;
      const [claimed] = await tx
        .update(cpOperations)
        .set({
          status: "running",
          lockedBy: this.instanceId,
          lockedUntil: new Date(now.getTime() + settings.operationLeaseMs),
          attempts: sql`${cpOperations.attempts} + 1`,
          updatedAt: now,
        })
        .where(eq(cpOperations.id, candidate.id))
        .returning();
      return claimed ? { decision, row: claimed } : null;
    });
  }

  /** A quarantined operation fails like any other that failed for good. */
  private async quarantined(
    operation: CpOperationRow,
    error: CpOperationError,
    abandonedBy: string | null,
  ): Promise<void> {
    this.deps.logger.error(
      {
        operationId: operation.id,
        orgId: operation.orgId,
        workspaceId: operation.workspaceId,
        kind: operation.kind,
        attempts: operation.attempts,
        abandonedBy,
      },
      `operation quarantined: ${error.message}`,
    );
    await this.onFailed(operation, error);
  }

  async execute(operation: CpOperationRow): Promise<void> {
    const { db, logger, settings, clock } = this.deps;
    const log = logger.child({
      operationId: operation.id,
      orgId: operation.orgId,
      workspaceId: operation.workspaceId,
      kind: operation.kind,
    });
    const releaseLease = keepLease(
      settings.operationLeaseMs,
      () =>
        db
          .update(cpOperations)
          .set({ lockedUntil: new Date(clock.now().getTime() + settings.operationLeaseMs) })
          .where(and(eq(cpOperations.id, operation.id), eq(cpOperations.lockedBy, this.instanceId))),
      (error) => log.warn({ err: error }, "lease renewal failed"),
    );
    const scrub = new Scrubber();
    // Appends finished steps to the operation row in order, each with its duration.
    const recorder = new StepRecorder((step) =>
      db
        .update(cpOperations)
        .set({ steps: sql`${cpOperations.steps} || ${JSON.stringify([step])}::jsonb` })
        .where(eq(cpOperations.id, operation.id)),
    );
    try {
      const report = recorder.reporter();
      const step: StepReporter = (name, detail) =>
        report(name, detail === undefined ? undefined : scrub.text(detail));
      const outcome = await this.perform(operation, step, scrub);
      await recorder.flush();
      await this.finish(operation, { status: "succeeded", error: null, result: outcome?.result ?? null });
      log.info({ attempts: operation.attempts }, "operation succeeded");
    } catch (error) {
      await recorder.flush().catch(() => {});
      await this.fail(operation, error, log, scrub);
    } finally {
      releaseLease();
      this.gate.finished(operation.id);
    }
  }

  private async fail(
    operation: CpOperationRow,
    error: unknown,
    log: ControlPlaneDeps["logger"],
    scrub: Scrubber,
  ): Promise<void> {
    const now = this.deps.clock.now();
    if (error instanceof OperationSuperseded) {
      await this.finish(operation, {
        status: "failed",
        error: { code: "superseded", message: error.message, retryable: false },
        result: null,
      });
      return;
    }
    if (error instanceof OperationDeferred) {
      await this.reschedule(operation, new Date(now.getTime() + error.delayMs), null, true);
      return;
    }
    const report = describeFailure(error, "unexpected error; see the control plane log", scrub);
    const failure: CpOperationError = {
      code: report.code,
      message: report.message,
      retryable: report.retryable,
    };
    if (report.retryable && operation.attempts < this.deps.settings.operationMaxAttempts) {
      const delay = retryDelayMs(operation.attempts);
      log.warn(
        { ...report.log, attempts: operation.attempts, retryInMs: delay },
        "operation failed; will retry",
      );
      await this.reschedule(operation, new Date(now.getTime() + delay), failure, false);
      return;
    }
    log.error({ ...report.log, attempts: operation.attempts }, "operation failed");
    if (await this.finish(operation, { status: "failed", error: failure, result: null })) {
      await this.onFailed(operation, failure);
    }
  }

  private async reschedule(
    operation: CpOperationRow,
    runAfter: Date,
    error: CpOperationError | null,
    refundAttempt: boolean,
  ): Promise<void> {
    await this.deps.db
      .update(cpOperations)
      .set({
        status: "pending",
        lockedBy: null,
        lockedUntil: null,
        runAfter,
        ...(error ? { error } : {}),
        ...(refundAttempt ? { attempts: sql`${cpOperations.attempts} - 1` } : {}),
        updatedAt: this.deps.clock.now(),
      })
      .where(and(eq(cpOperations.id, operation.id), eq(cpOperations.lockedBy, this.instanceId)));
  }

  /** Ends the operation if this runner still holds it; false when it lost the lease (or the row is gone). */
  private async finish(
    operation: CpOperationRow,
    outcome: {
      status: "succeeded" | "failed";
      error: CpOperationError | null;
      result: CpOperationRow["result"];
    },
  ): Promise<boolean> {
    const now = this.deps.clock.now();
    const finished = await this.deps.db
      .update(cpOperations)
      .set({
        status: outcome.status,
        error: outcome.error,
        result: outcome.result,
        lockedBy: null,
        lockedUntil: null,
        updatedAt: now,
        finishedAt: now,
      })
      .where(and(eq(cpOperations.id, operation.id), eq(cpOperations.lockedBy, this.instanceId)))
      .returning({ id: cpOperations.id });
    return finished.length > 0;
  }
}

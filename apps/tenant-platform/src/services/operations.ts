import { EXTERNAL_RUNTIME, type WorkspaceStatus } from "@molecule/contracts";
import {
  type OperationRow,
  operations,
  type WorkspaceRow,
  workspaceSecrets,
  workspaces,
  workspaceTokens,
} from "@molecule/db";
import {
  describeFailure,
  type Handle,
  Scrubber,
  type WorkspaceRef,
  type WorkspaceSpec,
} from "@molecule/provisioner-core";
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
import type { PlatformDeps } from "./deps.ts";
import { NO_INBOUND_TOKEN } from "./inbound-token.ts";
import { heartbeatIntervalSeconds } from "./liveness.ts";
import { openOperationInput } from "./operation-input.ts";
import { transitionWorkspace } from "./transitions.ts";

class OperationSuperseded extends Error {}

type OperationError = { code: string; message: string };

/**
 * Runs durable operations: claims one row at a time with `FOR UPDATE SKIP LOCKED`, holds it under a lease it
 * keeps renewing, records each step as it finishes. A process killed mid-operation leaves a lease that expires;
 * whoever claims the row next runs it again (alone, and only while attempts are left: see ClaimGate), and every
 * backend call is idempotent, so it converges.
 */
export class OperationRunner extends WorkLoop<OperationRow> {
  private readonly gate = new ClaimGate();

  constructor(
    private readonly deps: PlatformDeps,
    private readonly instanceId: string,
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
  async claim(): Promise<OperationRow | null> {
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
    | { decision: "run" | "run_alone"; row: OperationRow }
    | { decision: "quarantine"; row: OperationRow; error: OperationError; abandonedBy: string | null }
    | null
  > {
    const { db, settings, clock } = this.deps;
    const earlier = alias(operations, "earlier");
    return db.transaction(async (tx) => {
      const now = clock.now();
      const [candidate] = await tx
        .select({
          id: operations.id,
          status: operations.status,
          attempts: operations.attempts,
          lockedBy: operations.lockedBy,
        })
        .from(operations)
        .where(
          and(
            or(
              and(eq(operations.status, "pending"), lte(operations.runAfter, now)),
              and(eq(operations.status, "running"), lt(operations.lockedUntil, now)),
            ),
            // One operation per workspace at a time, in the order they were asked for.
            notExists(
              tx
                .select({ one: sql`1` })
                .from(earlier)
                .where(
                  and(
                    eq(earlier.workspaceId, operations.workspaceId),
                    ne(earlier.id, operations.id),
                    inArray(earlier.status, ["pending", "running"]),
                    or(
                      lt(earlier.createdAt, operations.createdAt),
                      and(eq(earlier.status, "running"), gte(earlier.lockedUntil, now)),
                    ),
                  ),
                ),
            ),
          ),
        )
        .orderBy(asc(operations.createdAt))
        .limit(1)
        .for("update", { skipLocked: true });
      if (!candidate) return null;
      const decision = this.gate.decide(candidate, settings.operationMaxAttempts);
      if (decision === "quarantine") {
        const error = quarantinedError(candidate.attempts, settings.operationMaxAttempts);
        const [quarantined] = await tx
          .update(operations)
          .set({
            status: "failed",
            error,
            lockedBy: null,
            lockedUntil: null,
            updatedAt: now,
            finishedAt: now,
          })
          .where(eq(operations.id, candidate.id))
          .returning();
        return quarantined ? { decision, row: quarantined, error, abandonedBy: candidate.lockedBy } : null;
      }
      if (decision !== "run" && decision !== "run_alone") return null;
      const [claimed] = await tx
        .update(operations)
        .set({
          status: "running",
          lockedBy: this.instanceId,
          lockedUntil: new Date(now.getTime() + settings.operationLeaseMs),
          attempts: sql`${operations.attempts} + 1`,
          updatedAt: now,
        })
        .where(eq(operations.id, candidate.id))
        .returning();
      return claimed ? { decision, row: claimed } : null;
    });
  }

  /** A quarantined operation fails like any other that failed for good: the workspace fails with its reason. */
  private async quarantined(
    operation: OperationRow,
    error: OperationError,
    abandonedBy: string | null,
  ): Promise<void> {
    this.deps.logger.error(
      {
        operationId: operation.id,
        workspaceId: operation.workspaceId,
        kind: operation.kind,
        attempts: operation.attempts,
        abandonedBy,
      },
      `operation quarantined: ${error.message}`,
    );
    this.publishFinished(operation, { status: "failed", error });
    await this.failedForGood(operation, error);
  }

  async execute(operation: OperationRow): Promise<void> {
    const { db, logger, settings, clock } = this.deps;
    const log = logger.child({
      operationId: operation.id,
      workspaceId: operation.workspaceId,
      kind: operation.kind,
    });
    const releaseLease = keepLease(
      settings.operationLeaseMs,
      () =>
        db
          .update(operations)
          .set({ lockedUntil: new Date(clock.now().getTime() + settings.operationLeaseMs) })
          .where(and(eq(operations.id, operation.id), eq(operations.lockedBy, this.instanceId))),
      (error) => log.warn({ err: error }, "lease renewal failed"),
    );
    const recorder = stepRecorder(this.deps, operation);
    // Learns the spec's values as the attempt opens them, so none reaches the row, an event or the log.
    const scrub = new Scrubber();
    try {
      await this.perform(operation, recorder, scrub);
      await recorder.flush();
      await this.finish(operation, { status: "succeeded", error: null });
      log.info({ attempts: operation.attempts }, "operation succeeded");
    } catch (error) {
      await recorder.flush().catch(() => {});
      await this.fail(operation, error, log, scrub);
    } finally {
      releaseLease();
      this.gate.finished(operation.id);
    }
  }

  private async perform(operation: OperationRow, recorder: StepRecorder, scrub: Scrubber): Promise<void> {
    const workspace = await this.workspace(operation.workspaceId);
    if (operation.kind !== "destroy" && (workspace.status === "removing" || workspace.status === "removed")) {
      throw new OperationSuperseded("the workspace is being deleted");
    }
    const { provisioner } = this.deps;
    const report = recorder.reporter();
    const step = (name: string, detail?: string) =>
      report(name, detail === undefined ? undefined : scrub.text(detail));
    // Stable across retries of one attempt, new for the next attempt: backends that call a remote API (the control
    // plane) send it as their idempotency key.
    const callKey = (call: string) => `${operation.id}:${operation.attempts}:${call}`;
    switch (operation.kind) {
      case "provision": {
        const spec = scrub.learn(await this.spec(workspace, operation));
        const handle = await provisioner.provision(spec, workspace.handle, {
          step,
          idempotencyKey: callKey("provision"),
        });
        await this.saveHandle(workspace.id, handle);
        await transitionWorkspace(this.deps, workspace.id, "awaiting_agent", { from: ["provisioning"] });
        return;
      }
      case "start": {
        const spec = scrub.learn(await this.spec(workspace, operation));
        await this.forgetHeartbeat(workspace.id);
        // Changed secrets reach the process only through a new one built from the current spec.
        const handle = await provisioner.start(spec, workspace.handle, {
          step,
          recreate: workspace.needsRestart,
          idempotencyKey: callKey("start"),
        });
        await this.saveHandle(workspace.id, handle);
        await this.markStarted(workspace.id);
        return;
      }
      case "stop": {
        await provisioner.stop(this.ref(workspace), { step, idempotencyKey: callKey("stop") });
        await transitionWorkspace(this.deps, workspace.id, "stopped", { from: ["stopping"] });
        return;
      }
      case "suspend": {
        const result = await provisioner.suspend(this.ref(workspace), {
          step,
          idempotencyKey: callKey("suspend"),
        });
        if (!result.suspended) step("stopped_instead", result.reason);
        const to: WorkspaceStatus = result.suspended ? "suspended" : "stopped";
        await transitionWorkspace(this.deps, workspace.id, to, { from: ["stopping"], reason: result.reason });
        return;
      }
      case "restart": {
        await provisioner.stop(this.ref(workspace), { step, idempotencyKey: callKey("stop") });
        await transitionWorkspace(this.deps, workspace.id, "stopped", { from: ["stopping"] });
        await transitionWorkspace(this.deps, workspace.id, "provisioning", { from: ["stopped"] });
        const spec = scrub.learn(await this.spec(workspace, operation));
        await this.forgetHeartbeat(workspace.id);
        // A restart always starts a fresh process from the current spec (secrets included); the volume stays.
        const handle = await provisioner.start(spec, workspace.handle, {
          step,
          recreate: true,
          idempotencyKey: callKey("start"),
        });
        await this.saveHandle(workspace.id, handle);
        await this.markStarted(workspace.id);
        return;
      }
      case "destroy": {
        // An external workspace's agent runs elsewhere: there is nothing of it on the backend to remove.
        if (workspace.runtime === EXTERNAL_RUNTIME) step("external_agent_disconnected");
        else await provisioner.destroy(this.ref(workspace), { step, idempotencyKey: callKey("destroy") });
        await this.deps.db.transaction(async (tx) => {
          await tx.delete(workspaceTokens).where(eq(workspaceTokens.workspaceId, workspace.id));
          await tx.delete(workspaceSecrets).where(eq(workspaceSecrets.workspaceId, workspace.id));
          await tx
            .update(workspaces)
            .set({
              status: "removed",
              statusReason: null,
              handle: null,
              url: null,
              ...NO_INBOUND_TOKEN,
              updatedAt: new Date(),
            })
            .where(eq(workspaces.id, workspace.id));
        });
        this.deps.events.publish({
          type: "workspace.status",
          workspaceId: workspace.id,
          data: { from: workspace.status, to: "removed", reason: null },
        });
        this.deps.events.credentialsChanged(workspace.id);
        step("records_removed");
        return;
      }
    }
  }

  /** The old process's last heartbeat says nothing about the new one; cleared before the new one can send its first. */
  private async forgetHeartbeat(workspaceId: string): Promise<void> {
    await this.deps.db
      .update(workspaces)
      .set({ lastHeartbeatAt: null })
      .where(eq(workspaces.id, workspaceId));
  }

  /** An agent that already heartbeated while the backend call finished has moved it online: that move stands. */
  private async markStarted(workspaceId: string): Promise<void> {
    await this.deps.db.update(workspaces).set({ needsRestart: false }).where(eq(workspaces.id, workspaceId));
    await transitionWorkspace(this.deps, workspaceId, "awaiting_agent", { from: ["provisioning"] });
  }

  private async fail(
    operation: OperationRow,
    error: unknown,
    log: PlatformDeps["logger"],
    scrub: Scrubber,
  ): Promise<void> {
    const { settings } = this.deps;
    if (error instanceof OperationSuperseded) {
      await this.finish(operation, {
        status: "failed",
        error: { code: "superseded", message: error.message },
      });
      return;
    }
    const failure = describeFailure(error, "unexpected error; see the platform log for details", scrub);
    const { code, message } = failure;
    if (failure.retryable && operation.attempts < settings.operationMaxAttempts) {
      const delay = retryDelayMs(operation.attempts);
      log.warn(
        { ...failure.log, attempts: operation.attempts, retryInMs: delay },
        "operation failed; will retry",
      );
      const now = this.deps.clock.now();
      await this.deps.db
        .update(operations)
        .set({
          status: "pending",
          lockedBy: null,
          lockedUntil: null,
          runAfter: new Date(now.getTime() + delay),
          error: { code, message },
          updatedAt: now,
        })
        .where(and(eq(operations.id, operation.id), eq(operations.lockedBy, this.instanceId)));
      return;
    }
    log.error({ ...failure.log, attempts: operation.attempts }, "operation failed");
    if (await this.finish(operation, { status: "failed", error: { code, message } })) {
      await this.failedForGood(operation, { code, message });
    }
  }

  /** After an operation ended as failed for good: the workspace fails with the operation's reason. */
  private async failedForGood(operation: OperationRow, error: OperationError): Promise<void> {
    await transitionWorkspace(this.deps, operation.workspaceId, "failed", { reason: error.message });
  }

  /** Ends the operation if this runner still holds it; false when it lost the lease (or the row is gone). */
  private async finish(
    operation: OperationRow,
    outcome: { status: "succeeded" | "failed"; error: OperationError | null },
  ): Promise<boolean> {
    const now = this.deps.clock.now();
    const finished = await this.deps.db
      .update(operations)
      .set({
        status: outcome.status,
        error: outcome.error,
        lockedBy: null,
        lockedUntil: null,
        updatedAt: now,
        finishedAt: now,
      })
      .where(and(eq(operations.id, operation.id), eq(operations.lockedBy, this.instanceId)))
      .returning({ id: operations.id });
    if (finished.length === 0) return false;
    this.publishFinished(operation, outcome);
    return true;
  }

  private publishFinished(
    operation: OperationRow,
    outcome: { status: "succeeded" | "failed"; error: OperationError | null },
  ): void {
    this.deps.events.publish({
      type: "operation.finished",
      workspaceId: operation.workspaceId,
      data: {
        operationId: operation.id,
        kind: operation.kind,
        status: outcome.status,
        ...(outcome.error ? { error: outcome.error } : {}),
      },
    });
  }

  private async workspace(id: string): Promise<WorkspaceRow> {
    const [row] = await this.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
    if (!row) throw new Error(`workspace ${id} of an operation does not exist`);
    return row;
  }

  private ref(workspace: WorkspaceRow): WorkspaceRef {
    return { workspaceId: workspace.id, orgId: workspace.orgId, handle: workspace.handle ?? null };
  }

  private async saveHandle(workspaceId: string, handle: Handle): Promise<void> {
    await this.deps.db
      .update(workspaces)
      .set({ handle, updatedAt: new Date() })
      .where(eq(workspaces.id, workspaceId));
  }

  /** The full spec, secrets opened and the operation's boot token unsealed, built fresh for every attempt. */
  private async spec(workspace: WorkspaceRow, operation: OperationRow): Promise<WorkspaceSpec> {
    const { db, sealer, settings } = this.deps;
    const secrets = await db
      .select()
      .from(workspaceSecrets)
      .where(eq(workspaceSecrets.workspaceId, workspace.id));
    const env: Record<string, string> = { ...settings.workspaceEnv };
    for (const secret of secrets) {
      env[secret.key] = sealer.open(secret.sealed, secret.keyVersion, `${workspace.id}:${secret.key}`);
    }
    env.WORKSPACE_ID = workspace.id;
    env.PLATFORM_URL = settings.publicUrl;
    env.HEARTBEAT_INTERVAL_SECONDS = String(heartbeatIntervalSeconds(settings.staleAfterMs));
    const bootToken = openOperationInput(sealer, operation);
    if (bootToken) env.WORKSPACE_BOOT_TOKEN = bootToken;
    return {
      workspaceId: workspace.id,
      orgId: workspace.orgId,
      deployment: settings.deployment,
      runtime: workspace.runtime,
      tier: workspace.tier as WorkspaceSpec["tier"],
      env,
      secretKeys: [...secrets.map((secret) => secret.key), "WORKSPACE_BOOT_TOKEN"],
      metadata: workspace.metadata,
    };
  }
}

/** Appends finished steps to the operation row in order, each with its duration, and publishes each one. */
function stepRecorder(deps: PlatformDeps, operation: Pick<OperationRow, "id" | "kind" | "workspaceId">) {
  return new StepRecorder(
    (step) =>
      deps.db
        .update(operations)
        .set({ steps: sql`${operations.steps} || ${JSON.stringify([step])}::jsonb`, updatedAt: new Date() })
        .where(eq(operations.id, operation.id)),
    // Metadata only: the step's `detail` (backend text) stays on the operation row.
    (step) =>
      deps.events.publish({
        type: "operation.step",
        workspaceId: operation.workspaceId,
        data: {
          operationId: operation.id,
          kind: operation.kind,
          name: step.name,
          durationMs: step.durationMs,
        },
      }),
  );
}

import { EXTERNAL_RUNTIME } from "@molecule/contracts";
import {
  type OperationRow,
  operations,
  type WorkspaceRow,
  workspaceResources,
  workspaceSecrets,
  workspaces,
  workspaceTokens,
} from "@molecule/db";
import {
  type Handle,
  ProvisionerError,
  pauseUnlessAborted,
  rebuildWorkspace,
  type Scrubber,
  type StepReporter,
  type WorkspaceRef,
  type WorkspaceSpec,
} from "@molecule/provisioner-core";
import { releaseAudited, tableAudit } from "@molecule/service-kit/audit";
import type { ChangeFeed } from "@molecule/service-kit/cluster";
import {
  type AttemptContext,
  OperationRunner as DurableOperationRunner,
  OperationSuperseded,
  type OperationsTable,
  type OperationTableAdapter,
  type RunnerDb,
} from "@molecule/service-kit/runner";
import { eq } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";
import { NO_INBOUND_TOKEN } from "./inbound-token.ts";
import { openOperationInput } from "./operation-input.ts";
import { transitionWorkspace } from "./transitions.ts";
import { workspaceEnv } from "./workspace-env.ts";

type OperationError = { code: string; message: string };

/** The kinds that build the workspace's spec (its secrets opened) for the backend. */
const SPEC_KINDS: ReadonlySet<OperationRow["kind"]> = new Set(["provision", "start", "restart", "redeploy"]);

/** How long a redeploy waits for its agent to be online again (REDEPLOY_ONLINE_TIMEOUT_SECONDS overrides). */
export const DEFAULT_REDEPLOY_ONLINE_TIMEOUT_MS = 300_000;
/** How often a redeploy re-reads its workspace for a change it was not told of (`redeployOnlinePollMs`). */
export const DEFAULT_REDEPLOY_ONLINE_POLL_MS = 500;

/** A wait that ends after its time, or at once when woken; a wake while nobody waits is kept until `reset`. */
class Wakeup {
  private woken = false;
  private waiting: (() => void) | null = null;

  wake(): void {
    this.woken = true;
    this.waiting?.();
  }

  reset(): void {
    this.woken = false;
  }

  within(ms: number): Promise<void> {
    if (this.woken) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const end = () => {
        clearTimeout(timer);
        this.waiting = null;
        resolve();
      };
      const timer = setTimeout(end, ms);
      this.waiting = end;
    });
  }
}

/** The platform's operations: one at a time per workspace; errors are stored as code and message. */
const operationTable: OperationTableAdapter<OperationRow, OperationError> = {
  table: operations as unknown as OperationsTable,
  subject: "workspaceId",
  storedError: ({ code, message }) => ({ code, message }),
  logFields: (operation) => ({ operationId: operation.id, workspaceId: operation.workspaceId }),
};

/**
 * The service-kit runner on `operations`: runs the workspace's lifecycle on the provisioner, publishes each step
 * and each finished operation, and fails the workspace with the reason of an operation that failed for good.
 */
export class OperationRunner extends DurableOperationRunner<OperationRow, OperationError> {
  /**
   * `changes`: the database's change feed, which tells this process of every replica's changes to workspace rows; a
   * redeploy waiting for its agent re-reads its workspace on each one.
   */
  constructor(
    private readonly platform: PlatformDeps,
    instanceId: string,
    pollIntervalMs = 500,
    private readonly changes: ChangeFeed | null = null,
  ) {
    super(
      platform,
      operationTable,
      instanceId,
      {
        perform: async (operation, step, scrub, attempt) => {
          await this.perform(operation, step, scrub, attempt);
          return undefined;
        },
        onFailed: (operation, error) => this.failedForGood(operation, error),
        onFinished: (operation, outcome) => this.publishFinished(operation, outcome),
        // Metadata only: the step's `detail` (backend text) stays on the operation row.
        onStep: (operation, step) =>
          platform.events.publish({
            type: "operation.step",
            workspaceId: operation.workspaceId,
            data: {
              operationId: operation.id,
              kind: operation.kind,
              name: step.name,
              durationMs: step.durationMs,
            },
          }),
        unexpectedMessage: "unexpected error; see the platform log for details",
      },
      pollIntervalMs,
    );
  }

  private unwatchQueued: Array<() => void> = [];

  /**
   * Also woken by every operation queued on any replica (its insert's `operations` change notification, a few
   * milliseconds after the commit), and when the feed reconnects (one may have gone unheard), so that a replica whose
   * own runner is busy or stopped does not leave the operation to the others' next poll. Claiming stays
   * `FOR UPDATE SKIP LOCKED`: every runner woken tries, one gets it.
   */
  override start(): void {
    super.start();
    if (this.changes && this.unwatchQueued.length === 0) {
      this.unwatchQueued = [
        this.changes.on("operations", () => this.wake()),
        this.changes.onReset(() => this.wake()),
      ];
    }
  }

  override async stop(): Promise<void> {
    for (const unwatch of this.unwatchQueued) unwatch();
    this.unwatchQueued = [];
    await super.stop();
  }

  /**
   * Every backend call gets the attempt's signal, and every write of the workspace's row is fenced by the attempt
   * (`attempt.fenced`), so an attempt abandoned at its deadline, or overtaken by another replica after its lease
   * lapsed, changes nothing when it comes back late.
   */
  private async perform(
    operation: OperationRow,
    step: StepReporter,
    scrub: Scrubber,
    attempt: AttemptContext,
  ): Promise<void> {
    // The secrets a spec needs are read beside the workspace: one round trip before the backend call, not two.
    const secrets = SPEC_KINDS.has(operation.kind) ? this.secretRows(operation.workspaceId) : null;
    secrets?.catch(() => {}); // awaited with the spec; when the workspace's read fails, that error is the one reported
    const workspace = await this.workspace(operation.workspaceId);
    if (operation.kind !== "destroy" && (workspace.status === "removing" || workspace.status === "removed")) {
      throw new OperationSuperseded("the workspace is being deleted");
    }
    const { provisioner } = this.platform;
    const { signal } = attempt;
    const within = attempt.fenced;
    // Stable across retries of one attempt, new for the next attempt: backends that call a remote API (the control
    // plane) send it as their idempotency key.
    const callKey = (call: string) => `${operation.id}:${operation.attempts}:${call}`;
    // Each resource the backend creates is written down before the call and claimed after (workspace_resources).
    const audit = tableAudit(
      this.platform.db,
      workspaceResources,
      { subjectId: workspace.id, orgId: workspace.orgId, backend: provisioner.name },
      () => this.platform.clock.now(),
    );
    switch (operation.kind) {
      case "provision": {
        const spec = scrub.learn(await this.spec(workspace, operation, secrets));
        const handle = await provisioner.provision(spec, workspace.handle, {
          step,
          signal,
          idempotencyKey: callKey("provision"),
          operationId: operation.id,
          audit,
        });
        await this.markStarted(attempt, workspace.id, handle);
        return;
      }
      case "start": {
        const spec = scrub.learn(await this.spec(workspace, operation, secrets));
        await attempt.fenced((tx) => this.forgetHeartbeat(tx, workspace.id));
        // Changed secrets reach the process only through a new one built from the current spec.
        const handle = await provisioner.start(spec, workspace.handle, {
          step,
          signal,
          recreate: workspace.needsRestart,
          idempotencyKey: callKey("start"),
          operationId: operation.id,
          audit,
        });
        await this.markStarted(attempt, workspace.id, handle);
        return;
      }
      case "stop": {
        await provisioner.stop(this.ref(workspace), { step, signal, idempotencyKey: callKey("stop") });
        await transitionWorkspace(this.platform, workspace.id, "stopped", { from: ["stopping"], within });
        return;
      }
      case "suspend": {
        const result = await provisioner.suspend(this.ref(workspace), {
          step,
          signal,
          idempotencyKey: callKey("suspend"),
        });
        if (!result.suspended) step("stopped_instead", result.reason);
        // `suspended` either way: a backend that stopped instead (EC2 without hibernation, a Fly machine too large
        // to suspend) is woken the same way, by `start` or an A2A request, only more slowly. The reason the suspend
        // was asked for (the idle sweep's) stays unless the backend has its own.
        await transitionWorkspace(this.platform, workspace.id, "suspended", {
          from: ["stopping"],
          reason: result.reason ?? workspace.statusReason,
          within,
        });
        return;
      }
      case "restart":
      case "redeploy": {
        const spec = scrub.learn(await this.spec(workspace, operation, secrets));
        // A fresh process from the current spec (secrets included) on the backend's current image; the volume stays.
        const handle = await rebuildWorkspace(provisioner, spec, workspace.handle, {
          step,
          signal,
          callKey,
          operationId: operation.id,
          audit,
          afterStop: async () => {
            await transitionWorkspace(this.platform, workspace.id, "stopped", { from: ["stopping"], within });
            await transitionWorkspace(this.platform, workspace.id, "provisioning", {
              from: ["stopped"],
              within,
            });
            await attempt.fenced((tx) => this.forgetHeartbeat(tx, workspace.id));
          },
        });
        await this.markStarted(attempt, workspace.id, handle);
        // A redeploy is done when the rebuilt workspace's agent is back: whoever rolls a fleet waits on it.
        if (operation.kind === "redeploy") await this.awaitOnline(workspace.id, step, signal);
        return;
      }
      case "destroy": {
        // An external workspace's agent runs elsewhere: there is nothing of it on the backend to remove.
        if (workspace.runtime === EXTERNAL_RUNTIME) step("external_agent_disconnected");
        else
          await provisioner.destroy(this.ref(workspace), {
            step,
            signal,
            idempotencyKey: callKey("destroy"),
          });
        await attempt.fenced(async (tx) => {
          await releaseAudited(
            tx,
            workspaceResources,
            { subjectId: workspace.id },
            this.platform.clock.now(),
          );
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
              updatedAt: this.platform.clock.now(),
            })
            .where(eq(workspaces.id, workspace.id));
        });
        this.platform.events.publish({
          type: "workspace.status",
          workspaceId: workspace.id,
          data: { from: workspace.status, to: "removed", reason: null },
        });
        this.platform.events.credentialsChanged(workspace.id);
        step("records_removed");
        return;
      }
    }
  }

  /**
   * Waits until the workspace is online, and fails for good when it is not within the redeploy's bound. Any status
   * change of the workspace this process hears of (the agent's first heartbeat taken here, on its event bus; one
   * taken by another replica, from the change feed) re-reads the row at once; the poll is for changes it does not
   * hear of (no feed, or one that is down).
   */
  private async awaitOnline(workspaceId: string, step: StepReporter, signal: AbortSignal): Promise<void> {
    const { clock, settings, events } = this.platform;
    const timeoutMs = settings.redeployOnlineTimeoutMs ?? DEFAULT_REDEPLOY_ONLINE_TIMEOUT_MS;
    const pollMs = settings.redeployOnlinePollMs ?? DEFAULT_REDEPLOY_ONLINE_POLL_MS;
    const started = clock.now().getTime();
    const changed = new Wakeup();
    const subscription = events.subscribe({ workspaceId }, (event) => {
      if (event.type === "workspace.status") changed.wake();
    });
    const unwatch = [
      this.changes?.on("workspaces", (id) => {
        if (id === workspaceId) changed.wake();
      }),
      // The feed dropped or came back: a change may have gone unheard.
      this.changes?.onReset(() => changed.wake()),
    ];
    try {
      for (;;) {
        // A change heard of while the row is read is not lost: the wait below ends at once.
        changed.reset();
        const { status } = await this.workspace(workspaceId);
        if (status === "online") {
          step("agent_online");
          return;
        }
        if (status === "removing" || status === "removed")
          throw new OperationSuperseded("the workspace is being deleted");
        if (clock.now().getTime() - started >= timeoutMs) {
          throw new ProvisionerError(
            "timeout",
            `the agent did not come online within ${Math.round(timeoutMs / 1000)} s of the redeploy (it is ${status})`,
            false,
          );
        }
        await pauseUnlessAborted((ms) => changed.within(ms), pollMs, signal, "redeploy");
      }
    } finally {
      subscription.unsubscribe();
      for (const stop of unwatch) stop?.();
    }
  }

  /** The old process's last heartbeat says nothing about the new one; cleared before the new one can send its first. */
  private async forgetHeartbeat(tx: RunnerDb, workspaceId: string): Promise<void> {
    await tx.update(workspaces).set({ lastHeartbeatAt: null }).where(eq(workspaces.id, workspaceId));
  }

  /**
   * Saves the started process's handle and waits for its agent, in one fenced write. An agent that already
   * heartbeated while the backend call finished has moved it online: that move stands.
   */
  private async markStarted(attempt: AttemptContext, workspaceId: string, handle: Handle): Promise<void> {
    await transitionWorkspace(this.platform, workspaceId, "awaiting_agent", {
      from: ["provisioning"],
      within: (move) =>
        attempt.fenced(async (tx) => {
          await this.saveHandle(tx, workspaceId, handle);
          await tx.update(workspaces).set({ needsRestart: false }).where(eq(workspaces.id, workspaceId));
          return move(tx);
        }),
    });
  }

  /** After an operation ended as failed for good: the workspace fails with the operation's reason. */
  private async failedForGood(operation: OperationRow, error: OperationError): Promise<void> {
    await transitionWorkspace(this.platform, operation.workspaceId, "failed", { reason: error.message });
  }

  private publishFinished(
    operation: OperationRow,
    outcome: { status: "succeeded" | "failed"; error: OperationError | null },
  ): void {
    this.platform.events.publish({
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
    const [row] = await this.platform.db.select().from(workspaces).where(eq(workspaces.id, id));
    if (!row) throw new Error(`workspace ${id} of an operation does not exist`);
    return row;
  }

  private ref(workspace: WorkspaceRow): WorkspaceRef {
    return { workspaceId: workspace.id, orgId: workspace.orgId, handle: workspace.handle ?? null };
  }

  private async saveHandle(tx: RunnerDb, workspaceId: string, handle: Handle): Promise<void> {
    await tx
      .update(workspaces)
      .set({ handle, updatedAt: this.platform.clock.now() })
      .where(eq(workspaces.id, workspaceId));
  }

  private secretRows(workspaceId: string): Promise<(typeof workspaceSecrets.$inferSelect)[]> {
    return this.platform.db
      .select()
      .from(workspaceSecrets)
      .where(eq(workspaceSecrets.workspaceId, workspaceId))
      .execute();
  }

  /**
   * The full spec, secrets opened and the operation's boot token unsealed, built fresh for every attempt (`rows`: the
   * workspace's secrets, read with it).
   */
  private async spec(
    workspace: WorkspaceRow,
    operation: OperationRow,
    rows: Promise<(typeof workspaceSecrets.$inferSelect)[]> | null,
  ): Promise<WorkspaceSpec> {
    const { sealer, settings } = this.platform;
    const secrets = await (rows ?? this.secretRows(workspace.id));
    const opened: Record<string, string> = {};
    for (const secret of secrets) {
      opened[secret.key] = sealer.open(secret.sealed, secret.keyVersion, `${workspace.id}:${secret.key}`);
    }
    const env = workspaceEnv(settings, workspace.id, opened);
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

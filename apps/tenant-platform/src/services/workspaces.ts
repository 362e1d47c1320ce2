import { createHash } from "node:crypto";
import {
  type AcceptedOperation,
  type CreatedWorkspace,
  type CreateWorkspaceBody,
  canTransition,
  DomainError,
  EXTERNAL_RUNTIME,
  isExternalCreate,
  OPERATION_ENTRY_STATUS,
  type OperationKind,
  sourcesOf,
  type WorkspaceStatus,
  type WorkspaceView,
} from "@molecule/contracts";
import {
  type NewWorkspaceRow,
  type OperationRow,
  type OperationStep,
  operations,
  type WorkspaceRow,
  workspaceSecrets,
  workspaces,
  workspaceTokens,
} from "@molecule/db";
import { hashToken, mintToken } from "@molecule/identity";
import type { RunnerDb } from "@molecule/service-kit/runner";
import { and, desc, eq, isNull, ne } from "drizzle-orm";
import { assertAgentUrl } from "./agent-url-policy.ts";
import { connectionBundle } from "./connection-bundle.ts";
import type { PlatformDeps } from "./deps.ts";
import { openOperationInput, sealOperationInput } from "./operation-input.ts";
import { claimReadyMember } from "./pools.ts";
import { toAcceptedOperation, toOperationView, toWorkspaceView } from "./views.ts";

export type LifecycleKind = Exclude<OperationKind, "provision">;

/** Where each lifecycle request may start from; anything else is an illegal transition (409). */
export const LIFECYCLE_SOURCES: Record<LifecycleKind, readonly WorkspaceStatus[]> = {
  start: ["stopped", "suspended", "failed"],
  stop: ["awaiting_agent", "online", "degraded", "offline", "suspended", "failed"],
  restart: ["awaiting_agent", "online", "degraded", "offline", "failed"],
  redeploy: ["awaiting_agent", "online", "degraded", "offline", "failed"],
  suspend: ["awaiting_agent", "online", "degraded", "offline"],
  // Anything that may move to `removing`, as the shared transition table says.
  destroy: sourcesOf("removing"),
};

export interface IdempotencyInput {
  key: string | undefined;
  scope: string;
  body: unknown;
}

function requestHash(body: unknown): string {
  return createHash("sha256")
    .update(JSON.stringify(body ?? null))
    .digest("hex");
}

function isUniqueViolation(error: unknown): boolean {
  const seen = new Set<unknown>();
  let current: unknown = error;
  while (current && typeof current === "object" && !seen.has(current)) {
    seen.add(current);
    if ((current as { code?: unknown }).code === "23505") return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

type WorkspaceInsert = Pick<NewWorkspaceRow, "id" | "runtime" | "backend" | "status" | "url" | "handle">;

interface QueuedOperation {
  operationId: string;
  workspaceId: string;
  kind: OperationKind;
  idempotency: IdempotencyInput;
  bootToken: string | null;
  /** Recorded as already succeeded with these steps: there is nothing for the runner to do. */
  finishedSteps?: OperationStep[];
}

/** The longest a claimed member's replacement waits for the claimed workspace's agent (see `refillOnceOnline`). */
export const REFILL_AFTER_CLAIM_MAX_MS = 2_000;

export class WorkspaceService {
  constructor(
    private readonly deps: PlatformDeps,
    /** An operation was queued (its row committed): the runner may take it at once. */
    private readonly onOperationQueued: (operationId: string) => void = () => {},
    /** A create took a warm pool member: the pool's filler starts its replacement. */
    private readonly onPoolClaimed: () => void = () => {},
  ) {}

  async list(status?: WorkspaceStatus): Promise<WorkspaceView[]> {
    const { db, settings } = this.deps;
    const rows = await db
      .select()
      .from(workspaces)
      .where(
        and(
          eq(workspaces.orgId, settings.orgId),
          status ? eq(workspaces.status, status) : ne(workspaces.status, "removed"),
        ),
      )
      .orderBy(desc(workspaces.createdAt));
    return rows.map(toWorkspaceView);
  }

  async getRow(id: string): Promise<WorkspaceRow> {
    const [row] = await this.deps.db
      .select()
      .from(workspaces)
      .where(and(eq(workspaces.id, id), eq(workspaces.orgId, this.deps.settings.orgId)));
    if (!row) throw new DomainError("not_found", `workspace ${id} not found`);
    return row;
  }

  async get(id: string): Promise<WorkspaceView> {
    return toWorkspaceView(await this.getRow(id));
  }

  async getOperation(id: string) {
    const [row] = await this.deps.db
      .select({ operation: operations })
      .from(operations)
      .innerJoin(workspaces, eq(workspaces.id, operations.workspaceId))
      .where(and(eq(operations.id, id), eq(workspaces.orgId, this.deps.settings.orgId)));
    if (!row) throw new DomainError("not_found", `operation ${id} not found`);
    return toOperationView(row.operation);
  }

  async listOperations(workspaceId: string) {
    await this.getRow(workspaceId);
    const rows = await this.deps.db
      .select()
      .from(operations)
      .where(eq(operations.workspaceId, workspaceId))
      .orderBy(desc(operations.createdAt))
      .limit(50);
    return rows.map(toOperationView);
  }

  /** Replays an earlier request with the same key, or refuses a different body under the same key. */
  private async replay(idempotency: IdempotencyInput): Promise<AcceptedOperation | null> {
    return (await this.replayRow(idempotency))?.accepted ?? null;
  }

  private async replayRow(
    idempotency: IdempotencyInput,
  ): Promise<{ accepted: AcceptedOperation; operation: OperationRow } | null> {
    const scopedKey = this.scopedKey(idempotency);
    if (!scopedKey) return null;
    const [existing] = await this.deps.db
      .select()
      .from(operations)
      .where(eq(operations.idempotencyKey, scopedKey));
    if (!existing) return null;
    if (existing.requestHash !== requestHash(idempotency.body)) {
      throw new DomainError(
        "idempotency_key_reused",
        "this Idempotency-Key was already used with a different request body",
      );
    }
    const workspace = await this.getRow(existing.workspaceId);
    return {
      accepted: toAcceptedOperation(workspace, existing),
      operation: existing,
    };
  }

  private scopedKey(idempotency: IdempotencyInput): string | null {
    if (!idempotency.key) return null;
    return `${this.deps.settings.orgId}:${idempotency.scope}:${idempotency.key}`;
  }

  /**
   * Creates a workspace. An external one (`external: true`) is recorded as `awaiting_agent` with no backend call,
   * and the answer carries its one-time connection bundle; `requestOrigin` is where the caller reached this
   * platform, used for the bundle only when PLATFORM_URL is the Docker host alias remote agents cannot resolve.
   */
  async create(
    body: CreateWorkspaceBody,
    idempotencyKey: string | undefined,
    requestOrigin?: string,
  ): Promise<CreatedWorkspace> {
    if (isExternalCreate(body)) return this.createExternal(body, idempotencyKey, requestOrigin);
    const { ids, settings, provisioner } = this.deps;
    const runtime = body.runtime ?? "";
    if (!settings.allowedRuntimes.includes(runtime)) {
      throw new DomainError(
        "bad_request",
        `runtime "${runtime}" is not allowed; allowed runtimes: ${settings.allowedRuntimes.join(", ")}`,
      );
    }
    const idempotency = { key: idempotencyKey, scope: "POST /workspaces", body };
    const replayed = await this.replay(idempotency);
    if (replayed) return replayed;

    const workspaceId = ids.next("ws");
    const operationId = ids.next("op");
    const bootToken = mintToken("mbt");
    let claimed: { workspaceId: string; resuming: boolean } | null;
    try {
      // A ready warm pool member of this runtime and tier becomes the workspace; without one, a cold provision, in
      // the same transaction (one commit on the way to the runner).
      claimed = await this.deps.db.transaction(async (tx) => {
        const member = await this.claimFromPool(tx, body, runtime, { operationId, idempotency, bootToken });
        if (!member) {
          await this.writeWorkspace(
            tx,
            body,
            { id: workspaceId, runtime, backend: provisioner.name, status: "provisioning" },
            { operationId, workspaceId, kind: "provision", idempotency, bootToken },
          );
        }
        return member;
      });
    } catch (error) {
      // Two requests with one key raced: the loser answers with the winner's workspace.
      if (idempotencyKey && isUniqueViolation(error)) {
        const winner = await this.replay(idempotency);
        if (winner) return winner;
      }
      throw error;
    }
    if (claimed) {
      this.deps.events.publish({
        type: "workspace.status",
        workspaceId: claimed.workspaceId,
        data: {
          to: claimed.resuming ? "provisioning" : "awaiting_agent",
          reason: "claimed from a warm pool",
        },
      });
      this.deps.logger.info(
        { workspaceId: claimed.workspaceId, runtime, tier: body.tier },
        "pool member claimed",
      );
      if (claimed.resuming) this.onOperationQueued(operationId);
      this.refillOnceOnline(claimed.workspaceId);
      return this.accepted(claimed.workspaceId, operationId);
    }
    this.deps.events.publish({
      type: "workspace.status",
      workspaceId,
      data: { to: "provisioning", reason: null },
    });
    this.onOperationQueued(operationId);
    return this.accepted(workspaceId, operationId);
  }

  /**
   * Tells the filler to start the claimed member's replacement once the claimed workspace is online (its agent
   * registered, on any replica) or anything but on its way there, or after `refillAfterClaimMaxMs`: a replacement
   * started at the claim competes for the host with the claimed agent's registration (on docker, a container and a
   * runtime starting beside it), which is the claim's own latency. The filler's own rounds go on meanwhile.
   */
  private refillOnceOnline(workspaceId: string): void {
    let done = false;
    const refill = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      subscription.unsubscribe();
      this.onPoolClaimed();
    };
    const timer = setTimeout(refill, this.deps.settings.refillAfterClaimMaxMs ?? REFILL_AFTER_CLAIM_MAX_MS);
    timer.unref?.();
    const subscription = this.deps.events.subscribe(
      { workspaceId },
      (event) => {
        const to = event.type === "workspace.status" ? event.data.to : null;
        if (to !== null && to !== "awaiting_agent" && to !== "provisioning") refill();
      },
      undefined,
      refill,
    );
  }

  /**
   * Claims a ready member of the (runtime, tier) pool and writes the workspace under the member's id, in the caller's
   * transaction: the workspace is `awaiting_agent` at once, on the member's resources (its handle), with a fresh boot
   * token its waiting agent receives through `POST /registry/claim`. Its provision operation is recorded as done; a
   * suspended member's workspace is `provisioning` instead, with a `start` operation that resumes it.
   * Null when the pool has no ready member (or there is no pool).
   */
  private async claimFromPool(
    tx: RunnerDb,
    body: CreateWorkspaceBody,
    runtime: string,
    input: Pick<QueuedOperation, "operationId" | "idempotency" | "bootToken">,
  ): Promise<{ workspaceId: string; resuming: boolean } | null> {
    const { settings, provisioner, clock } = this.deps;
    const now = clock.now();
    const member = await claimReadyMember(tx, settings.orgId, runtime, body.tier, now);
    if (!member) return null;
    // A suspended member (Fly) is resumed by a start operation before its agent can take the claim.
    const resuming = member.suspended;
    await this.writeWorkspace(
      tx,
      body,
      {
        id: member.id,
        runtime,
        backend: provisioner.name,
        status: resuming ? "provisioning" : "awaiting_agent",
        handle: member.handle,
      },
      resuming
        ? { ...input, workspaceId: member.id, kind: "start" }
        : {
            ...input,
            workspaceId: member.id,
            kind: "provision",
            finishedSteps: [
              {
                name: "pool_member_claimed",
                startedAt: now.toISOString(),
                durationMs: 0,
                detail: `warm pool ${runtime} tier ${body.tier}: a started workspace whose agent waited for its claim`,
              },
            ],
          },
    );
    return { workspaceId: member.id, resuming };
  }

  /**
   * stop, start, restart, redeploy, suspend, destroy: validated against the status now, then queued durably.
   * `reason` is the status reason of the move it makes (the idle sweep's suspend says why).
   */
  async requestLifecycle(
    workspaceId: string,
    kind: LifecycleKind,
    idempotencyKey: string | undefined,
    options: { reason?: string } = {},
  ): Promise<AcceptedOperation> {
    const { db, ids } = this.deps;
    const idempotency = { key: idempotencyKey, scope: `POST /workspaces/${workspaceId}/${kind}`, body: {} };
    const replayed = await this.replay(idempotency);
    if (replayed) return replayed;

    const operationId = ids.next("op");
    const needsBootToken = kind === "start" || kind === "restart" || kind === "redeploy";
    const bootToken = needsBootToken ? mintToken("mbt") : null;
    const outcome = await db.transaction(async (tx) => {
      const [row] = await tx
        .select()
        .from(workspaces)
        .where(and(eq(workspaces.id, workspaceId), eq(workspaces.orgId, this.deps.settings.orgId)))
        .for("update");
      if (!row) throw new DomainError("not_found", `workspace ${workspaceId} not found`);
      if (row.runtime === EXTERNAL_RUNTIME && kind !== "destroy") {
        throw new DomainError(
          "conflict",
          `cannot ${kind} external workspace ${workspaceId}: its agent runs outside the platform; ` +
            "stop or start it where it runs, or DELETE the workspace",
          { runtime: EXTERNAL_RUNTIME },
        );
      }
      if (kind === "destroy" && (row.status === "removing" || row.status === "removed")) {
        const [current] = await tx
          .select()
          .from(operations)
          .where(and(eq(operations.workspaceId, workspaceId), eq(operations.kind, "destroy")))
          .orderBy(desc(operations.createdAt))
          .limit(1);
        return { existingOperationId: current?.id ?? null, moved: null };
      }
      if (!LIFECYCLE_SOURCES[kind].includes(row.status)) {
        throw new DomainError("invalid_transition", `cannot ${kind} a workspace that is ${row.status}`, {
          status: row.status,
        });
      }
      // No "operation in progress" refusal: the status check above already refuses while one is under way (its
      // entry status is transitional), and an operation that has moved the workspace to its end status but not yet
      // written its own finish is no reason to refuse. The runner runs a workspace's operations one at a time, in order.
      const entry = OPERATION_ENTRY_STATUS[kind];
      if (row.status !== entry && !canTransition(row.status, entry)) {
        throw new DomainError("invalid_transition", `cannot ${kind} a workspace that is ${row.status}`);
      }
      await tx
        .update(workspaces)
        .set({ status: entry, statusReason: options.reason ?? null, updatedAt: new Date() })
        .where(eq(workspaces.id, workspaceId));
      await this.queueOperation(tx, { operationId, workspaceId, kind, idempotency, bootToken });
      return {
        existingOperationId: null,
        moved: row.status === entry ? null : { from: row.status, to: entry },
      };
    });
    if (outcome.existingOperationId) return this.accepted(workspaceId, outcome.existingOperationId);
    if (outcome.moved) {
      this.deps.events.publish({
        type: "workspace.status",
        workspaceId,
        data: { ...outcome.moved, reason: options.reason ?? null },
      });
    }
    this.onOperationQueued(operationId);
    return this.accepted(workspaceId, operationId);
  }

  /** The new workspace row, its sealed secrets and its first operation, in one transaction. */
  private async insertWorkspace(
    body: CreateWorkspaceBody,
    row: WorkspaceInsert,
    operation: QueuedOperation,
  ): Promise<void> {
    await this.deps.db.transaction((tx) => this.writeWorkspace(tx, body, row, operation));
  }

  private async writeWorkspace(
    tx: Pick<PlatformDeps["db"], "insert">,
    body: CreateWorkspaceBody,
    row: WorkspaceInsert,
    operation: QueuedOperation,
  ): Promise<void> {
    const { sealer, settings } = this.deps;
    const workspaceId = row.id;
    await tx.insert(workspaces).values({
      ...row,
      orgId: settings.orgId,
      name: body.name,
      tier: body.tier,
      metadata: body.metadata ?? {},
      // Absent follows IDLE_SUSPEND_AFTER (stored null); null or 0 turns idle suspend off for this one.
      idleSuspendSeconds: body.idle_suspend_seconds === undefined ? null : (body.idle_suspend_seconds ?? 0),
    });
    const secretRows = Object.entries(body.secrets ?? {}).map(([key, value]) => {
      const { sealed, keyVersion } = sealer.seal(value, `${workspaceId}:${key}`);
      return { workspaceId, key, sealed, keyVersion };
    });
    // The rows that reference the workspace, sent together (pipelined on the transaction's connection: one round
    // trip, not two or three); they do not depend on each other.
    await Promise.all([
      secretRows.length > 0 ? tx.insert(workspaceSecrets).values(secretRows) : null,
      this.queueOperation(tx, operation),
    ]);
  }

  /**
   * Writes the operation row (and the boot token it will inject, hashed; the plaintext sealed in the row so a retry
   * after a crash injects the same one). Runs inside the caller's transaction.
   */
  private async queueOperation(
    tx: Pick<PlatformDeps["db"], "insert">,
    input: QueuedOperation,
  ): Promise<void> {
    const { operationId, workspaceId, kind, idempotency, bootToken, finishedSteps } = input;
    // Independent rows, sent together (pipelined).
    await Promise.all([
      bootToken
        ? tx.insert(workspaceTokens).values({ tokenHash: hashToken(bootToken), workspaceId, kind: "boot" })
        : null,
      tx.insert(operations).values({
        id: operationId,
        workspaceId,
        kind,
        idempotencyKey: this.scopedKey(idempotency),
        requestHash: requestHash(idempotency.body),
        ...(bootToken ? sealOperationInput(this.deps.sealer, operationId, bootToken) : {}),
        ...(finishedSteps
          ? { status: "succeeded" as const, steps: finishedSteps, finishedAt: new Date() }
          : {}),
      }),
    ]);
  }

  /**
   * An external workspace: no backend call, no process to run. The one-time registration token is a boot token
   * (stored hashed; its plaintext sealed in the operation row, so a replay of this create can answer it again
   * while it is unused).
   */
  private async createExternal(
    body: CreateWorkspaceBody,
    idempotencyKey: string | undefined,
    requestOrigin: string | undefined,
  ): Promise<CreatedWorkspace> {
    const { ids, settings } = this.deps;
    if (body.url) {
      assertAgentUrl(body.url, {
        allowInsecure: settings.allowInsecureAgentUrls,
        allowPrivate: settings.allowPrivateAgentUrls,
      });
    }
    const idempotency = { key: idempotencyKey, scope: "POST /workspaces", body };
    const replayed = await this.replayRow(idempotency);
    if (replayed) return this.withConnection(replayed.accepted, replayed.operation, requestOrigin);

    const workspaceId = ids.next("ws");
    const operationId = ids.next("op");
    const registrationToken = mintToken("mbt");
    const now = new Date();
    try {
      await this.insertWorkspace(
        body,
        {
          id: workspaceId,
          runtime: EXTERNAL_RUNTIME,
          backend: EXTERNAL_RUNTIME,
          status: "awaiting_agent",
          url: body.url ?? null,
        },
        {
          operationId,
          workspaceId,
          kind: "provision",
          idempotency,
          bootToken: registrationToken,
          finishedSteps: [
            {
              name: "registration_token_issued",
              startedAt: now.toISOString(),
              durationMs: 0,
              detail: "external agent: nothing to provision",
            },
          ],
        },
      );
    } catch (error) {
      if (idempotencyKey && isUniqueViolation(error)) {
        const winner = await this.replayRow(idempotency);
        if (winner) return this.withConnection(winner.accepted, winner.operation, requestOrigin);
      }
      throw error;
    }
    this.deps.events.publish({
      type: "workspace.status",
      workspaceId,
      data: { to: "awaiting_agent", reason: null },
    });
    this.deps.logger.info({ workspaceId }, "external workspace created; awaiting its agent");
    const accepted = await this.accepted(workspaceId, operationId);
    return { ...accepted, connection: this.bundle(accepted.workspace, registrationToken, requestOrigin) };
  }

  /** A replayed create: the same token while it is unused, none (and no snippets) once it was spent. */
  private async withConnection(
    accepted: AcceptedOperation,
    operation: OperationRow,
    requestOrigin: string | undefined,
  ): Promise<CreatedWorkspace> {
    if (accepted.workspace.runtime !== EXTERNAL_RUNTIME) return accepted;
    let token: string | null = null;
    const issued = openOperationInput(this.deps.sealer, operation);
    if (issued) {
      const [unspent] = await this.deps.db
        .select({ hash: workspaceTokens.tokenHash })
        .from(workspaceTokens)
        .where(
          and(
            eq(workspaceTokens.tokenHash, hashToken(issued)),
            eq(workspaceTokens.kind, "boot"),
            isNull(workspaceTokens.spentAt),
          ),
        );
      token = unspent ? issued : null;
    }
    return { ...accepted, connection: this.bundle(accepted.workspace, token, requestOrigin) };
  }

  private bundle(workspace: WorkspaceView, token: string | null, requestOrigin: string | undefined) {
    const { publicUrl, staleAfterMs } = this.deps.settings;
    // Remote agents cannot resolve the Docker host alias; the address the caller used is the better guess.
    const dockerAlias = /^https?:\/\/host\.docker\.internal[:/]/i.test(`${publicUrl}/`);
    return connectionBundle({
      workspaceId: workspace.id,
      platformUrl: dockerAlias && requestOrigin ? requestOrigin : publicUrl,
      registrationToken: token,
      agentUrl: workspace.url,
      staleAfterMs,
    });
  }

  private async accepted(workspaceId: string, operationId: string): Promise<AcceptedOperation> {
    const [workspace, [operation]] = await Promise.all([
      this.getRow(workspaceId),
      this.deps.db.select().from(operations).where(eq(operations.id, operationId)),
    ]);
    if (!operation) throw new DomainError("internal", `operation ${operationId} vanished`);
    return toAcceptedOperation(workspace, operation);
  }
}

import { createHash } from "node:crypto";
import {
  type AcceptedOperation,
  type CreateWorkspaceBody,
  canTransition,
  DomainError,
  OPERATION_ENTRY_STATUS,
  type OperationKind,
  type WorkspaceStatus,
  type WorkspaceView,
} from "@molecule/contracts";
import {
  type OperationRow,
  operations,
  type WorkspaceRow,
  workspaceSecrets,
  workspaces,
  workspaceTokens,
} from "@molecule/db";
import { and, desc, eq, inArray, ne } from "drizzle-orm";
import { hashToken, mintToken } from "./crypto.ts";
import type { PlatformDeps } from "./deps.ts";
import { toOperationView, toWorkspaceView } from "./views.ts";

export type LifecycleKind = Exclude<OperationKind, "provision">;

const ACTIVE_OPERATION: OperationRow["status"][] = ["pending", "running"];

/** Where each lifecycle request may start from; anything else is an illegal transition (409). */
const LIFECYCLE_SOURCES: Record<LifecycleKind, readonly WorkspaceStatus[]> = {
  start: ["stopped", "suspended", "failed"],
  stop: ["awaiting_agent", "online", "degraded", "offline", "suspended", "failed"],
  restart: ["awaiting_agent", "online", "degraded", "offline", "failed"],
  suspend: ["awaiting_agent", "online", "degraded", "offline"],
  destroy: [
    "provisioning",
    "awaiting_agent",
    "online",
    "degraded",
    "offline",
    "stopping",
    "stopped",
    "suspended",
    "failed",
  ],
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

export class WorkspaceService {
  constructor(
    private readonly deps: PlatformDeps,
    private readonly onOperationQueued: () => void = () => {},
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
    return { workspace: toWorkspaceView(workspace), operation: toOperationView(existing) };
  }

  private scopedKey(idempotency: IdempotencyInput): string | null {
    if (!idempotency.key) return null;
    return `${this.deps.settings.orgId}:${idempotency.scope}:${idempotency.key}`;
  }

  async create(body: CreateWorkspaceBody, idempotencyKey: string | undefined): Promise<AcceptedOperation> {
    const { db, ids, sealer, settings, provisioner } = this.deps;
    if (!settings.allowedRuntimes.includes(body.runtime)) {
      throw new DomainError(
        "bad_request",
        `runtime "${body.runtime}" is not allowed; allowed runtimes: ${settings.allowedRuntimes.join(", ")}`,
      );
    }
    const idempotency = { key: idempotencyKey, scope: "POST /workspaces", body };
    const replayed = await this.replay(idempotency);
    if (replayed) return replayed;

    const workspaceId = ids.next("ws");
    const operationId = ids.next("op");
    const bootToken = mintToken("mbt");
    try {
      await db.transaction(async (tx) => {
        await tx.insert(workspaces).values({
          id: workspaceId,
          orgId: settings.orgId,
          name: body.name,
          runtime: body.runtime,
          tier: body.tier,
          backend: provisioner.name,
          status: "provisioning",
          metadata: body.metadata ?? {},
        });
        const secretRows = Object.entries(body.secrets ?? {}).map(([key, value]) => {
          const { sealed, keyVersion } = sealer.seal(value, `${workspaceId}:${key}`);
          return { workspaceId, key, sealed, keyVersion };
        });
        if (secretRows.length > 0) await tx.insert(workspaceSecrets).values(secretRows);
        await this.queueOperation(tx, {
          operationId,
          workspaceId,
          kind: "provision",
          idempotency,
          bootToken,
        });
      });
    } catch (error) {
      // Two requests with one key raced: the loser answers with the winner's workspace.
      if (idempotencyKey && isUniqueViolation(error)) {
        const winner = await this.replay(idempotency);
        if (winner) return winner;
      }
      throw error;
    }
    this.deps.events.publish({
      type: "workspace.status",
      workspaceId,
      data: { to: "provisioning", reason: null },
    });
    this.onOperationQueued();
    return this.accepted(workspaceId, operationId);
  }

  /** stop, start, restart, suspend, destroy: validated against the status now, then queued durably. */
  async requestLifecycle(
    workspaceId: string,
    kind: LifecycleKind,
    idempotencyKey: string | undefined,
  ): Promise<AcceptedOperation> {
    const { db, ids } = this.deps;
    const idempotency = { key: idempotencyKey, scope: `POST /workspaces/${workspaceId}/${kind}`, body: {} };
    const replayed = await this.replay(idempotency);
    if (replayed) return replayed;

    const operationId = ids.next("op");
    const needsBootToken = kind === "start" || kind === "restart";
    const bootToken = needsBootToken ? mintToken("mbt") : null;
    const outcome = await db.transaction(async (tx) => {
      const [row] = await tx
        .select()
        .from(workspaces)
        .where(and(eq(workspaces.id, workspaceId), eq(workspaces.orgId, this.deps.settings.orgId)))
        .for("update");
      if (!row) throw new DomainError("not_found", `workspace ${workspaceId} not found`);
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
      if (kind !== "destroy") {
        const [active] = await tx
          .select({ id: operations.id, kind: operations.kind })
          .from(operations)
          .where(and(eq(operations.workspaceId, workspaceId), inArray(operations.status, ACTIVE_OPERATION)))
          .limit(1);
        if (active) {
          throw new DomainError("conflict", `operation ${active.id} (${active.kind}) is still in progress`, {
            operationId: active.id,
          });
        }
      }
      const entry = OPERATION_ENTRY_STATUS[kind];
      if (row.status !== entry && !canTransition(row.status, entry)) {
        throw new DomainError("invalid_transition", `cannot ${kind} a workspace that is ${row.status}`);
      }
      await tx
        .update(workspaces)
        .set({ status: entry, statusReason: null, updatedAt: new Date() })
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
        data: { ...outcome.moved, reason: null },
      });
    }
    this.onOperationQueued();
    return this.accepted(workspaceId, operationId);
  }

  /**
   * Writes the operation row (and the boot token it will inject, hashed; the plaintext sealed in the row so a retry
   * after a crash injects the same one). Runs inside the caller's transaction.
   */
  private async queueOperation(
    tx: Pick<PlatformDeps["db"], "insert">,
    input: {
      operationId: string;
      workspaceId: string;
      kind: OperationKind;
      idempotency: IdempotencyInput;
      bootToken: string | null;
    },
  ): Promise<void> {
    const { operationId, workspaceId, kind, idempotency, bootToken } = input;
    if (bootToken) {
      await tx.insert(workspaceTokens).values({ tokenHash: hashToken(bootToken), workspaceId, kind: "boot" });
    }
    await tx.insert(operations).values({
      id: operationId,
      workspaceId,
      kind,
      idempotencyKey: this.scopedKey(idempotency),
      requestHash: requestHash(idempotency.body),
      sealedInput: bootToken ? this.deps.sealer.seal(bootToken, `op:${operationId}`).sealed : null,
    });
  }

  private async accepted(workspaceId: string, operationId: string): Promise<AcceptedOperation> {
    const workspace = await this.getRow(workspaceId);
    const [operation] = await this.deps.db.select().from(operations).where(eq(operations.id, operationId));
    if (!operation) throw new DomainError("internal", `operation ${operationId} vanished`);
    return { workspace: toWorkspaceView(workspace), operation: toOperationView(operation) };
  }
}

import { type CpOperationKind, type CpOperationView, DomainError } from "@molecule/contracts";
import { sha256Hex } from "@molecule/identity";
import type { RuntimeStatus } from "@molecule/provisioner-core";
import { and, asc, eq, inArray, ne } from "drizzle-orm";
import { type CpOperationRow, type CpWorkspaceRow, cpOperations, cpWorkspaces } from "../db/schema.ts";
import type { TenantCaller } from "../http/types.ts";
import { isUniqueViolation } from "./db-errors.ts";
import type { ControlPlaneDeps } from "./deps.ts";
import { operationInputAad } from "./sealing.ts";
import { operationView } from "./views.ts";
import type { WorkspaceOperationInput } from "./workspace-operations.ts";

export interface WorkspaceRequest {
  kind: CpOperationKind;
  workspaceId: string;
  /** The Idempotency-Key header (required). */
  key: string;
  /** The signed body bytes; with the kind and workspace id they make the request hash. */
  body: Uint8Array;
  /** provision and start only. */
  input?: WorkspaceOperationInput;
}

const notFound = (id: string) => new DomainError("not_found", `no workspace ${id} in this org`);

/**
 * Workspaces a tenant asks the control plane to run. Every request is an operation row the runner executes; the
 * caller only ever sees its own org's workspaces and operations (another org's are answered as not found).
 */
export class WorkspaceService {
  constructor(
    private readonly deps: ControlPlaneDeps,
    private readonly onOperationQueued: () => void = () => {},
  ) {}

  async request(caller: TenantCaller, request: WorkspaceRequest): Promise<CpOperationView> {
    const requestHash = sha256Hex(
      Buffer.concat([Buffer.from(`${request.kind}\n${request.workspaceId}\n`), Buffer.from(request.body)]),
    );
    const replay = await this.replay(caller, request.key, requestHash);
    if (replay) return replay;
    try {
      const operation = await this.deps.db.transaction(async (tx) => {
        const now = this.deps.clock.now();
        if (request.kind === "provision" && request.input) {
          const { spec } = request.input;
          await tx
            .insert(cpWorkspaces)
            .values({
              id: spec.workspace_id,
              orgId: caller.orgId,
              runtime: spec.runtime,
              tier: spec.tier,
              pool: spec.pool ?? null,
              state: "provisioning",
              createdAt: now,
              updatedAt: now,
            })
            .onConflictDoNothing();
        }
        const [workspace] = await tx
          .select()
          .from(cpWorkspaces)
          .where(eq(cpWorkspaces.id, request.workspaceId));
        if (!workspace || workspace.orgId !== caller.orgId) {
          // Provisioning an id another org holds is refused without saying whose it is.
          if (workspace && request.kind === "provision") {
            throw new DomainError("conflict", `workspace id ${request.workspaceId} cannot be used`);
          }
          throw notFound(request.workspaceId);
        }
        if (request.kind === "provision" && request.input) {
          const { spec } = request.input;
          await tx
            .update(cpWorkspaces)
            .set({ runtime: spec.runtime, tier: spec.tier, updatedAt: now })
            .where(eq(cpWorkspaces.id, workspace.id));
        }
        if (request.kind === "start" && workspace.pool !== null && workspace.poolClaimedAt === null) {
          // The tenant keeps its pool members suspended and starts one only for the create that claimed it.
          await tx
            .update(cpWorkspaces)
            .set({ poolClaimedAt: now, updatedAt: now })
            .where(eq(cpWorkspaces.id, workspace.id));
        }
        const id = this.deps.ids.next("op");
        const sealed = request.input ? this.deps.sealer.sealJson(request.input, operationInputAad(id)) : null;
        const [row] = await tx
          .insert(cpOperations)
          .values({
            id,
            orgId: caller.orgId,
            workspaceId: workspace.id,
            subject: workspace.id,
            kind: request.kind,
            idempotencyKey: request.key,
            requestHash,
            sealedInput: sealed?.sealed ?? null,
            sealedKeyVersion: sealed?.keyVersion ?? null,
            runAfter: now,
            createdAt: now,
            updatedAt: now,
          })
          .returning();
        return row as CpOperationRow;
      });
      this.onOperationQueued();
      return operationView(operation);
    } catch (error) {
      if (!isUniqueViolation(error)) throw error;
      // A concurrent request with the same key won the race.
      const raced = await this.replay(caller, request.key, requestHash);
      if (raced) return raced;
      throw error;
    }
  }

  private async replay(
    caller: TenantCaller,
    key: string,
    requestHash: string,
  ): Promise<CpOperationView | null> {
    const [existing] = await this.deps.db
      .select()
      .from(cpOperations)
      .where(and(eq(cpOperations.orgId, caller.orgId), eq(cpOperations.idempotencyKey, key)));
    if (!existing) return null;
    if (existing.requestHash !== requestHash) {
      throw new DomainError(
        "idempotency_key_reused",
        "this Idempotency-Key was used for a different request",
      );
    }
    return operationView(existing);
  }

  private async owned(caller: TenantCaller, workspaceId: string): Promise<CpWorkspaceRow> {
    const [workspace] = await this.deps.db
      .select()
      .from(cpWorkspaces)
      .where(and(eq(cpWorkspaces.id, workspaceId), eq(cpWorkspaces.orgId, caller.orgId)));
    if (!workspace) throw notFound(workspaceId);
    return workspace;
  }

  async status(caller: TenantCaller, workspaceId: string): Promise<RuntimeStatus> {
    const workspace = await this.owned(caller, workspaceId);
    const status = await this.deps.provisioner.status({
      workspaceId,
      orgId: caller.orgId,
      handle: workspace.handle ?? null,
    });
    return status.detail ? { state: status.state, detail: status.detail } : { state: status.state };
  }

  async list(caller: TenantCaller) {
    const rows = await this.deps.db
      .select({ id: cpWorkspaces.id, state: cpWorkspaces.state })
      .from(cpWorkspaces)
      .where(and(eq(cpWorkspaces.orgId, caller.orgId), ne(cpWorkspaces.state, "destroyed")))
      .orderBy(asc(cpWorkspaces.createdAt));
    return rows.map((row) => ({ workspace_id: row.id, state: row.state }));
  }

  async operation(caller: TenantCaller, operationId: string): Promise<CpOperationView> {
    const [row] = await this.deps.db
      .select()
      .from(cpOperations)
      .where(
        and(
          eq(cpOperations.id, operationId),
          eq(cpOperations.orgId, caller.orgId),
          inArray(cpOperations.kind, ["provision", "start", "stop", "suspend", "destroy"]),
        ),
      );
    if (!row) throw new DomainError("not_found", `no operation ${operationId}`);
    return operationView(row);
  }
}

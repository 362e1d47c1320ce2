import type { AcceptedOperation, OperationView, Tier, WorkspaceView } from "@molecule/contracts";
import type { OperationRow, WorkspaceRow } from "@molecule/db";

export function toWorkspaceView(row: WorkspaceRow): WorkspaceView {
  return {
    id: row.id,
    orgId: row.orgId,
    name: row.name,
    runtime: row.runtime,
    tier: row.tier as Tier,
    backend: row.backend,
    status: row.status,
    statusReason: row.statusReason,
    needsRestart: row.needsRestart,
    url: row.url,
    metadata: row.metadata,
    lastHeartbeatAt: row.lastHeartbeatAt?.toISOString() ?? null,
    idleSuspendSeconds: row.idleSuspendSeconds,
    lastActivityAt: row.lastActivityAt?.toISOString() ?? null,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

export function toOperationView(row: OperationRow): OperationView {
  return {
    id: row.id,
    workspaceId: row.workspaceId,
    kind: row.kind,
    status: row.status,
    attempts: row.attempts,
    steps: row.steps,
    error: row.error ?? null,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
    finishedAt: row.finishedAt?.toISOString() ?? null,
  };
}

/** A create or lifecycle answer: the workspace at the top level and under `workspace`, with its operation. */
export function toAcceptedOperation(workspace: WorkspaceRow, operation: OperationRow): AcceptedOperation {
  const view = toWorkspaceView(workspace);
  return { ...view, workspace: view, operation: toOperationView(operation) };
}

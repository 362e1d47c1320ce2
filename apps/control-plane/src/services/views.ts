import type {
  CpOperationKind,
  CpOperationView,
  OrgOperationKind,
  OrgOperationView,
  OrgView,
} from "@molecule/contracts";
import type { CpOperationRow, CpOrgRow } from "../db/schema.ts";

/** What a tenant sees of an operation (contracts' CpOperationView). */
export function operationView(row: CpOperationRow): CpOperationView {
  return {
    id: row.id,
    workspace_id: row.workspaceId ?? "",
    kind: row.kind as CpOperationKind,
    status: row.status,
    steps: row.steps.map((step) => ({
      name: step.name,
      ...(step.detail ? { detail: step.detail } : {}),
      duration_ms: step.durationMs,
    })),
    result: row.result ?? null,
    error: row.error ?? null,
    created_at: row.createdAt.toISOString(),
    finished_at: row.finishedAt?.toISOString() ?? null,
  };
}

/** What the operator sees of an org-level operation (contracts' OrgOperationView). */
export function orgOperationView(row: CpOperationRow): OrgOperationView {
  return {
    id: row.id,
    kind: row.kind as OrgOperationKind,
    status: row.status,
    attempts: row.attempts,
    steps: row.steps.map((step) => ({
      name: step.name,
      ...(step.detail ? { detail: step.detail } : {}),
      duration_ms: step.durationMs,
    })),
    error: row.error ?? null,
    created_at: row.createdAt.toISOString(),
    finished_at: row.finishedAt?.toISOString() ?? null,
  };
}

export function orgView(row: CpOrgRow): OrgView {
  return {
    id: row.id,
    slug: row.slug,
    name: row.name,
    status: row.status,
    tenant_url: row.tenantUrl,
    is_canary: row.isCanary,
    tenant_image: row.tenantImage,
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  };
}

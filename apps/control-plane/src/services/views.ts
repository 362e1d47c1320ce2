import type {
  CpOperationKind,
  CpOperationView,
  OrgOperationKind,
  OrgOperationView,
  OrgView,
  RolloutTenant,
  RolloutView,
} from "@molecule/contracts";
import type { CpOperationRow, CpOrgRow, CpRolloutRow } from "../db/schema.ts";

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

/** What the operator sees of a rollout: its plan with each tenant's progress (contracts' RolloutView). */
export function rolloutView(row: CpRolloutRow): RolloutView {
  const cancelled = row.error?.code === "superseded" && row.cancelRequestedAt !== null;
  const tenants: RolloutTenant[] = row.plan.phases.flatMap((phase) =>
    phase.tenants.map((tenant) => {
      const progress = row.tenants[tenant.slug];
      return {
        slug: tenant.slug,
        org_id: tenant.orgId,
        phase: phase.name,
        status: progress?.status ?? "pending",
        workspaces: progress?.workspaces ?? [],
        error: progress?.error ?? null,
      };
    }),
  );
  return {
    id: row.id,
    scope: row.kind,
    status: cancelled ? "cancelled" : row.status,
    dry_run: false,
    canary_slugs: row.plan.canarySlugs,
    batch_size: row.plan.batchSize,
    soak_seconds: row.plan.soakSeconds,
    tenants,
    steps: row.steps.map((step) => ({
      name: step.name,
      ...(step.detail ? { detail: step.detail } : {}),
      duration_ms: step.durationMs,
    })),
    error: row.error ? { code: cancelled ? "cancelled" : row.error.code, message: row.error.message } : null,
    cancel_requested: row.cancelRequestedAt !== null,
    created_at: row.createdAt.toISOString(),
    finished_at: row.finishedAt?.toISOString() ?? null,
  };
}

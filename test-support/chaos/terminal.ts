/**
 * Whether an accepted operation has reached its terminal state. Tenant operations are read through the tenant's
 * API. Control-plane operations are read from its database: org operations have no route of their own, and an org's
 * delete removes its operation rows with it (then the org's tombstone is the terminal state of all of them).
 */
import type postgres from "postgres";
import type { TrackedOperation } from "./ledger.ts";
import type { TenantDriver } from "./tenant-driver.ts";

export type Terminal = { final: string; error?: unknown } | null;

export async function tenantOperationState(
  tenant: TenantDriver,
  operation: TrackedOperation,
): Promise<Terminal> {
  const { status, body } = await tenant.get(`/operations/${operation.id}`);
  if (status !== 200)
    throw new Error(`GET /operations/${operation.id} answered ${status}: ${JSON.stringify(body)}`);
  return terminal(body.status, body.error);
}

/** `succeeded`, `failed (<error code>)`, or null while the operation is pending or running. */
function terminal(status: string, error: unknown): Terminal {
  if (status === "succeeded") return { final: status };
  if (status !== "failed") return null;
  const code = (error as { code?: string } | null)?.code ?? "no error";
  return { final: `failed (${code})`, error };
}

export async function controlPlaneOperationState(
  sql: postgres.Sql,
  operation: TrackedOperation,
): Promise<Terminal> {
  const [org] = await sql<{ status: string }[]>`SELECT status FROM cp_orgs WHERE id = ${orgIdOf(operation)}`;
  if (operation.kind === "destroy_org") {
    if (org?.status === "deleted") return { final: "succeeded" };
    const [row] = await sql<{ status: string; error: unknown }[]>`
      SELECT status, error FROM cp_operations WHERE org_id = ${operation.subject} AND kind = 'destroy_org'`;
    return row?.status === "failed" ? terminal(row.status, row.error) : null;
  }
  const [row] =
    operation.kind === "provision_tenant"
      ? await sql<{ status: string; error: unknown }[]>`
          SELECT status, error FROM cp_operations
          WHERE org_id = ${operation.subject} AND kind = 'provision_tenant'
          ORDER BY created_at DESC LIMIT 1`
      : await sql<{ status: string; error: unknown }[]>`
          SELECT status, error FROM cp_operations WHERE id = ${operation.id}`;
  if (!row) return org?.status === "deleted" ? { final: "gone with its org" } : null;
  return terminal(row.status, row.error);
}

function orgIdOf(operation: TrackedOperation): string {
  if (!operation.orgId) throw new Error(`control-plane operation ${operation.id} has no org`);
  return operation.orgId;
}

import { ProvisionerError, type Scrubber, type StepReporter } from "@molecule/provisioner-core";
import { releaseAudited, tableAudit, tenantAuditBackend } from "@molecule/service-kit/audit";
import { and, eq, gte, lt, ne, or } from "drizzle-orm";
import {
  type CpOperationError,
  type CpOperationRow,
  type CpOrgRow,
  cpBootEvents,
  cpOperations,
  cpOrgs,
  cpRequestNonces,
  cpTenantBackups,
  cpTenantCredentials,
  cpTenantResources,
  cpWorkspaces,
} from "../db/schema.ts";
import type { TenantRef, TenantSpec } from "../tenants/backend.ts";
import type { ControlPlaneDeps } from "./deps.ts";
import {
  type AttemptContext,
  OperationDeferred,
  type OperationOutcome,
  OperationSuperseded,
} from "./runner.ts";
import { tenantEnvAad } from "./sealing.ts";

/** Env names of a tenant whose values are secret. */
export const TENANT_SECRET_KEYS = [
  "CP_TENANT_TOKEN",
  "PROVISION_SHARED_SECRET",
  "ADMIN_TOKEN",
  "SECRETS_ENCRYPTION_KEY",
  "TENANT_BACKUP_S3_SECRET_ACCESS_KEY",
] as const;

const WAIT_FOR_RUNNING_MS = 2_000;

/**
 * Runs one org operation on the tenant backend (and, for a delete, the workspace backend). Every backend call runs
 * under the attempt's signal, and every write of the org's row is fenced by the attempt (`attempt.fenced`), so an
 * attempt abandoned at its deadline, or overtaken by another runner after its lease lapsed, changes nothing when it
 * comes back late.
 */
export async function performOrgOperation(
  deps: ControlPlaneDeps,
  operation: CpOperationRow,
  step: StepReporter,
  scrub: Scrubber,
  attempt: AttemptContext,
): Promise<OperationOutcome | undefined> {
  const [org] = await deps.db.select().from(cpOrgs).where(eq(cpOrgs.id, operation.orgId));
  if (!org) throw new OperationSuperseded("the org no longer exists");
  switch (operation.kind) {
    case "provision_tenant":
      await provisionTenant(deps, org, operation, step, scrub, attempt);
      return undefined;
    case "destroy_org":
      await destroyOrg(deps, org, operation, step, attempt);
      return undefined;
    default:
      throw new Error(`not an org operation: ${operation.kind}`);
  }
}

/**
 * A tenant provision or start that failed for good leaves the org `failed` (shown in provision_status); a failed stop
 * or redeploy leaves its status as it was (the tenant still runs what it ran).
 */
export async function orgOperationFailed(
  deps: ControlPlaneDeps,
  operation: CpOperationRow,
  _error: CpOperationError,
): Promise<void> {
  if (operation.kind !== "provision_tenant" && operation.kind !== "start_tenant") return;
  await deps.db
    .update(cpOrgs)
    .set({ status: "failed", updatedAt: deps.clock.now() })
    .where(and(eq(cpOrgs.id, operation.orgId), eq(cpOrgs.status, "provisioning")));
}

export function tenantRef(org: CpOrgRow): TenantRef {
  return { orgId: org.id, slug: org.slug, handle: org.tenantHandle ?? null };
}

/** The org's tenant spec, from its sealed environment; every secret in it is added to `scrub`. */
export function tenantSpec(deps: ControlPlaneDeps, org: CpOrgRow, scrub: Scrubber): TenantSpec {
  if (!org.tenantEnvSealed || org.tenantEnvKeyVersion === null) {
    throw new Error(`org ${org.id} has no sealed tenant environment`);
  }
  // The backup settings are the control plane's current ones, not those of the day the org was created.
  const env = {
    ...deps.sealer.openJson<Record<string, string>>(
      org.tenantEnvSealed,
      org.tenantEnvKeyVersion,
      tenantEnvAad(org.id),
    ),
    ...deps.settings.backups.tenantEnv,
  };
  scrub.addSpec({ env, secretKeys: TENANT_SECRET_KEYS, orgId: org.id });
  return {
    orgId: org.id,
    slug: org.slug,
    deployment: deps.settings.deployment,
    env,
    secretKeys: TENANT_SECRET_KEYS,
    isCanary: org.isCanary,
  };
}

async function provisionTenant(
  deps: ControlPlaneDeps,
  org: CpOrgRow,
  operation: CpOperationRow,
  step: StepReporter,
  scrub: Scrubber,
  attempt: AttemptContext,
): Promise<void> {
  if (org.status === "deleting" || org.status === "deleted") {
    throw new OperationSuperseded("the org is being deleted");
  }
  const instance = await deps.tenants.provision(tenantSpec(deps, org, scrub), org.tenantHandle ?? null, {
    step,
    signal: attempt.signal,
    operationId: operation.id,
    audit: tableAudit(
      deps.db,
      cpTenantResources,
      { subjectId: org.id, orgId: org.id, backend: tenantAuditBackend(deps.tenants.name) },
      () => deps.clock.now(),
    ),
  });
  await attempt.fenced((tx) =>
    tx
      .update(cpOrgs)
      .set({ tenantHandle: instance.handle, tenantUrl: instance.url, updatedAt: deps.clock.now() })
      .where(eq(cpOrgs.id, org.id)),
  );
  step("tenant_started", instance.url);
}

/**
 * Deletes an org: supersedes its queued operations and waits for running ones, destroys every workspace it has on
 * the workspace backend (the recorded ones, then any stray the backend still lists for the org), destroys the
 * tenant, then removes every row of the org and leaves a tombstone (id, slug, name, timestamps, status deleted).
 */
async function destroyOrg(
  deps: ControlPlaneDeps,
  org: CpOrgRow,
  operation: CpOperationRow,
  step: StepReporter,
  attempt: AttemptContext,
): Promise<void> {
  const { db, clock, provisioner, tenants } = deps;
  const { signal } = attempt;
  const now = clock.now();
  await attempt.fenced((tx) =>
    tx
      .update(cpOperations)
      .set({
        status: "failed",
        error: { code: "superseded", message: "the org is being deleted", retryable: false },
        lockedBy: null,
        lockedUntil: null,
        finishedAt: now,
        updatedAt: now,
      })
      .where(
        and(
          eq(cpOperations.orgId, org.id),
          ne(cpOperations.id, operation.id),
          or(
            eq(cpOperations.status, "pending"),
            and(eq(cpOperations.status, "running"), lt(cpOperations.lockedUntil, now)),
          ),
        ),
      ),
  );
  const [busy] = await db
    .select({ id: cpOperations.id })
    .from(cpOperations)
    .where(
      and(
        eq(cpOperations.orgId, org.id),
        ne(cpOperations.id, operation.id),
        eq(cpOperations.status, "running"),
        gte(cpOperations.lockedUntil, now),
      ),
    )
    .limit(1);
  if (busy) throw new OperationDeferred(`waiting for operation ${busy.id} to finish`, WAIT_FOR_RUNNING_MS);

  const workspaces = await db.select().from(cpWorkspaces).where(eq(cpWorkspaces.orgId, org.id));
  for (const workspace of workspaces) {
    await provisioner.destroy(
      { workspaceId: workspace.id, orgId: org.id, handle: workspace.handle ?? null },
      { signal },
    );
    step("workspace_destroyed", workspace.id);
  }
  const strays = new Set(
    (await provisioner.listManaged())
      .filter((resource) => resource.orgId === org.id && resource.workspaceId)
      .map((resource) => resource.workspaceId as string),
  );
  for (const workspaceId of strays) {
    await provisioner.destroy({ workspaceId, orgId: org.id, handle: null }, { signal });
    step("stray_workspace_destroyed", workspaceId);
  }

  await tenants.destroy(tenantRef(org), { signal });
  step("tenant_destroyed");
  // Whatever is still tagged with the org (a stray without a workspace id, a group of the org's) goes too.
  await tenants.sweepOrg(tenantRef(org), { signal });
  step("org_swept");
  const leftover = (await provisioner.listManaged()).filter((resource) => resource.orgId === org.id);
  if (leftover.length > 0) {
    throw new ProvisionerError(
      "backend_error",
      `the workspace backend still lists ${leftover.length} resource(s) of the org`,
      true,
    );
  }

  await attempt.fenced(async (tx) => {
    await releaseAudited(tx, cpTenantResources, { orgId: org.id }, clock.now());
    await tx.delete(cpRequestNonces).where(eq(cpRequestNonces.orgId, org.id));
    await tx.delete(cpBootEvents).where(eq(cpBootEvents.orgId, org.id));
    await tx.delete(cpTenantBackups).where(eq(cpTenantBackups.orgId, org.id));
    await tx.delete(cpTenantCredentials).where(eq(cpTenantCredentials.orgId, org.id));
    await tx.delete(cpOperations).where(eq(cpOperations.orgId, org.id));
    await tx.delete(cpWorkspaces).where(eq(cpWorkspaces.orgId, org.id));
    await tx
      .update(cpOrgs)
      .set({
        status: "deleted",
        tenantHandle: null,
        tenantUrl: null,
        tenantEnvSealed: null,
        tenantEnvKeyVersion: null,
        deletedAt: clock.now(),
        updatedAt: clock.now(),
      })
      .where(eq(cpOrgs.id, org.id));
  });
  deps.logger.info({ orgId: org.id }, "org deleted");
}

import type { CpWorkspaceSpec } from "@molecule/contracts";
import {
  type Handle,
  handleAgentUrl,
  type Scrubber,
  type StepReporter,
  type WorkspaceRef,
  type WorkspaceSpec,
} from "@molecule/provisioner-core";
import { releaseAudited, tableAudit } from "@molecule/service-kit/audit";
import { and, eq } from "drizzle-orm";
import {
  type CpOperationError,
  type CpOperationRow,
  type CpWorkspaceRow,
  cpOrgs,
  cpTenantResources,
  cpWorkspaces,
} from "../db/schema.ts";
import type { ControlPlaneDeps } from "./deps.ts";
import { type AttemptContext, type OperationOutcome, OperationSuperseded, type RunnerDb } from "./runner.ts";
import { operationInputAad } from "./sealing.ts";

/** What a workspace operation keeps sealed in its row: the spec (with secret env) and the start flag. */
export interface WorkspaceOperationInput {
  spec: CpWorkspaceSpec;
  recreate?: boolean;
}

/** The operations that no longer apply once their workspace was destroyed. */
const WORKSPACE_GONE_SUPERSEDES: ReadonlySet<string> = new Set(["stop", "suspend", "start"]);

/**
 * Runs one workspace operation on the workspace backend with the stored handle; an attempt abandoned at its deadline
 * or overtaken by another runner (`attempt.fenced`) writes nothing when its backend call comes back late.
 */
export async function performWorkspaceOperation(
  deps: ControlPlaneDeps,
  operation: CpOperationRow,
  step: StepReporter,
  scrub: Scrubber,
  attempt: AttemptContext,
): Promise<OperationOutcome | undefined> {
  const workspaceId = operation.workspaceId ?? "";
  const [row] = await deps.db
    .select({ workspace: cpWorkspaces, orgStatus: cpOrgs.status })
    .from(cpWorkspaces)
    .innerJoin(cpOrgs, eq(cpOrgs.id, cpWorkspaces.orgId))
    .where(and(eq(cpWorkspaces.id, workspaceId), eq(cpWorkspaces.orgId, operation.orgId)));
  if (!row) throw new OperationSuperseded("the workspace no longer exists");
  if (row.orgStatus === "deleting" || row.orgStatus === "deleted") {
    throw new OperationSuperseded("the org is being deleted");
  }
  const workspace = row.workspace;
  // A stop, suspend or start asked for before a destroy ran runs after it: it must not bring back (or mark stopped)
  // a workspace whose machine the destroy removed. A provision of the id may make it again; a destroy is a no-op.
  if (workspace.state === "destroyed" && WORKSPACE_GONE_SUPERSEDES.has(operation.kind)) {
    throw new OperationSuperseded("the workspace was destroyed");
  }
  const { provisioner } = deps;
  const idempotencyKey = `${operation.id}:${operation.attempts}`;
  const { signal } = attempt;
  const ref: WorkspaceRef = { workspaceId, orgId: operation.orgId, handle: workspace.handle ?? null };
  // Each resource the backend creates is written down before the call and claimed after (cp_tenant_resources).
  const audit = tableAudit(
    deps.db,
    cpTenantResources,
    { subjectId: workspaceId, orgId: operation.orgId, backend: provisioner.name },
    () => deps.clock.now(),
  );

  switch (operation.kind) {
    case "provision": {
      const input = openInput(deps, operation);
      const handle = await provisioner.provision(
        scrub.learn(toSpec(deps, operation, input.spec)),
        workspace.handle,
        {
          step,
          signal,
          idempotencyKey,
          operationId: operation.id,
          audit,
        },
      );
      await attempt.fenced((tx) => save(deps, tx, workspace, { handle, state: "running" }));
      return assigned(handle);
    }
    case "start": {
      const input = openInput(deps, operation);
      const handle = await provisioner.start(
        scrub.learn(toSpec(deps, operation, input.spec)),
        workspace.handle,
        {
          step,
          signal,
          idempotencyKey,
          operationId: operation.id,
          audit,
          recreate: input.recreate ?? false,
        },
      );
      await attempt.fenced((tx) => save(deps, tx, workspace, { handle, state: "running" }));
      return assigned(handle);
    }
    case "stop":
      await provisioner.stop(ref, { step, signal, idempotencyKey });
      await attempt.fenced((tx) => save(deps, tx, workspace, { state: "stopped" }));
      return undefined;
    case "suspend": {
      const result = await provisioner.suspend(ref, { step, signal, idempotencyKey });
      await attempt.fenced((tx) =>
        save(deps, tx, workspace, { state: result.suspended ? "suspended" : "stopped" }),
      );
      return { result: { suspended: result.suspended, ...(result.reason ? { reason: result.reason } : {}) } };
    }
    case "destroy":
      await provisioner.destroy(ref, { step, signal, idempotencyKey });
      await attempt.fenced(async (tx) => {
        await releaseAudited(tx, cpTenantResources, { subjectId: workspaceId }, deps.clock.now());
        await save(deps, tx, workspace, { handle: null, state: "destroyed" });
      });
      return undefined;
    default:
      throw new Error(`not a workspace operation: ${operation.kind}`);
  }
}

/** The agent's address the backend assigned (its handle's `agentUrl`), for the tenant to keep in its own handle. */
function assigned(handle: Handle): OperationOutcome | undefined {
  const agentUrl = handleAgentUrl(handle);
  return agentUrl ? { result: { agent_url: agentUrl } } : undefined;
}

/** A provision or start that failed for good leaves the workspace `failed`. */
export async function workspaceOperationFailed(
  deps: ControlPlaneDeps,
  operation: CpOperationRow,
  _error: CpOperationError,
): Promise<void> {
  if (operation.kind !== "provision" && operation.kind !== "start") return;
  await deps.db
    .update(cpWorkspaces)
    .set({ state: "failed", updatedAt: deps.clock.now() })
    .where(and(eq(cpWorkspaces.id, operation.workspaceId ?? ""), eq(cpWorkspaces.orgId, operation.orgId)));
}

function openInput(deps: ControlPlaneDeps, operation: CpOperationRow): WorkspaceOperationInput {
  if (!operation.sealedInput || operation.sealedKeyVersion === null) {
    throw new Error(`operation ${operation.id} has no sealed input`);
  }
  return deps.sealer.openJson(
    operation.sealedInput,
    operation.sealedKeyVersion,
    operationInputAad(operation.id),
  );
}

/** The backend's spec: the tenant's spec, for the caller's org, labelled with this installation's deployment. */
function toSpec(deps: ControlPlaneDeps, operation: CpOperationRow, spec: CpWorkspaceSpec): WorkspaceSpec {
  return {
    workspaceId: spec.workspace_id,
    orgId: operation.orgId,
    deployment: deps.settings.deployment,
    runtime: spec.runtime,
    tier: spec.tier,
    env: spec.env,
    secretKeys: spec.secret_keys,
    metadata: spec.metadata,
    ...(spec.pool ? { pool: spec.pool } : {}),
  };
}

async function save(
  deps: ControlPlaneDeps,
  tx: RunnerDb,
  workspace: CpWorkspaceRow,
  change: { handle?: Handle | null; state: string },
): Promise<void> {
  await tx
    .update(cpWorkspaces)
    .set({ ...change, updatedAt: deps.clock.now() })
    .where(eq(cpWorkspaces.id, workspace.id));
}

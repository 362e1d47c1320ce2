/**
 * The work of the tenant lifecycle operations (stop_tenant, start_tenant, redeploy_tenant), run by the operation
 * runner like every org operation: each attempt is idempotent, passes the attempt's signal to the backend, and makes
 * every row write through `attempt.fenced`, so an attempt abandoned or overtaken writes nothing.
 *
 * A started or redeployed tenant counts as back only once it reports `ready` (a boot event) after the backend call
 * began, and for a redeploy with the new image: until then, or until TENANT_READY_DEADLINE_SECONDS, the attempt
 * waits. A `failed` boot event, a redeploy command that fails, or a tenant that does not come back fails the
 * operation for good, with the command's output in the error.
 */
import {
  ProvisionerError,
  pauseUnlessAborted,
  type Scrubber,
  type StepReporter,
} from "@molecule/provisioner-core";
import { and, asc, eq, gt, inArray, max, notInArray } from "drizzle-orm";
import { type CpOperationRow, type CpOrgRow, cpBootEvents, cpOrgs } from "../db/schema.ts";
import type { TenantContext } from "../tenants/backend.ts";
import type { ControlPlaneDeps } from "./deps.ts";
import { tenantRef, tenantSpec } from "./org-operations.ts";
import { type AttemptContext, OperationSuperseded } from "./runner.ts";

const DEFAULT_READY_DEADLINE_MS = 300_000;
const DEFAULT_READY_POLL_MS = 1_000;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Runs one tenant lifecycle operation of the org (the runner's perform for these kinds). */
export async function performTenantLifecycle(
  deps: ControlPlaneDeps,
  operation: CpOperationRow,
  step: StepReporter,
  scrub: Scrubber,
  attempt: AttemptContext,
): Promise<undefined> {
  const [org] = await deps.db.select().from(cpOrgs).where(eq(cpOrgs.id, operation.orgId));
  if (!org) throw new OperationSuperseded("the org no longer exists");
  if (org.status === "deleting" || org.status === "deleted") {
    throw new OperationSuperseded("the org is being deleted");
  }
  const ctx: TenantContext = { step, operationId: operation.id, signal: attempt.signal };
  switch (operation.kind) {
    case "stop_tenant":
      await deps.tenants.stop(tenantRef(org), ctx);
      await setStatus(deps, attempt, org.id, "stopped");
      return undefined;
    case "start_tenant":
      await startTenant(deps, org, step, ctx, attempt);
      return undefined;
    case "redeploy_tenant":
      await redeployTenant(deps, org, operation, step, scrub, ctx, attempt);
      return undefined;
    default:
      throw new Error(`not a tenant lifecycle operation: ${operation.kind}`);
  }
}

async function startTenant(
  deps: ControlPlaneDeps,
  org: CpOrgRow,
  step: StepReporter,
  ctx: TenantContext,
  attempt: AttemptContext,
): Promise<void> {
  const before = await deps.tenants.status(tenantRef(org));
  if (before.state === "running" && org.status !== "stopped") {
    step("already_running", before.detail);
    return;
  }
  // From here the tenant's boot events are accepted again (a stopped org's are not).
  await setStatus(deps, attempt, org.id, "provisioning");
  const since = await lastBootEventId(deps, org.id);
  await deps.tenants.start(tenantRef(org), ctx);
  await waitForReady(deps, org.id, since, null, attempt.signal);
  step("tenant_ready");
}

async function redeployTenant(
  deps: ControlPlaneDeps,
  org: CpOrgRow,
  operation: CpOperationRow,
  step: StepReporter,
  scrub: Scrubber,
  ctx: TenantContext,
  attempt: AttemptContext,
): Promise<void> {
  if (org.status === "stopped") {
    throw new ProvisionerError("conflict", "the tenant is stopped: start it before a redeploy", false);
  }
  const image = operation.input?.image;
  if (!image) throw new Error(`redeploy operation ${operation.id} names no image`);
  const spec = tenantSpec(deps, org, scrub);
  step("image_chosen", image);
  const since = await lastBootEventId(deps, org.id);
  const done = await deps.tenants.redeploy(spec, org.tenantHandle ?? null, image, ctx);
  if (done.output) step("recreated", done.output);
  const instance = done.instance;
  if (instance) {
    await attempt.fenced((tx) =>
      tx
        .update(cpOrgs)
        .set({ tenantHandle: instance.handle, tenantUrl: instance.url, updatedAt: deps.clock.now() })
        .where(eq(cpOrgs.id, org.id)),
    );
  }
  await waitForReady(deps, org.id, since, image, attempt.signal, done.output);
  step("tenant_ready", image);
}

/** The newest boot event's id (0 without one): a tenant's answer to this attempt comes after it. */
async function lastBootEventId(deps: ControlPlaneDeps, orgId: string): Promise<number> {
  const [row] = await deps.db
    .select({ id: max(cpBootEvents.id) })
    .from(cpBootEvents)
    .where(eq(cpBootEvents.orgId, orgId));
  return row?.id ?? 0;
}

/**
 * Waits for a `ready` boot event after `since` (with `image`, when given), for TENANT_READY_DEADLINE_SECONDS of
 * polling. A `failed` boot event, or the deadline, fails for good with what the tenant or the command said.
 */
async function waitForReady(
  deps: ControlPlaneDeps,
  orgId: string,
  since: number,
  image: string | null,
  signal: AbortSignal,
  output?: string,
): Promise<void> {
  const deadlineMs = deps.settings.tenantReadyDeadlineMs ?? DEFAULT_READY_DEADLINE_MS;
  const pollMs = deps.settings.tenantReadyPollMs ?? DEFAULT_READY_POLL_MS;
  const withOutput = (text: string) => (output ? `${text}; the recreate said: ${output}` : text);
  for (let waited = 0; ; waited += pollMs) {
    const events = await deps.db
      .select()
      .from(cpBootEvents)
      .where(
        and(
          eq(cpBootEvents.orgId, orgId),
          gt(cpBootEvents.id, since),
          inArray(cpBootEvents.stage, ["ready", "failed"]),
        ),
      )
      .orderBy(asc(cpBootEvents.id));
    for (const event of events) {
      if (event.stage === "failed") {
        throw new ProvisionerError(
          "backend_error",
          withOutput(`the tenant reported a failed boot: ${event.detail ?? "no detail"}`),
          false,
        );
      }
      if (image === null || event.image === image) return;
    }
    if (waited >= deadlineMs) {
      const seen = events.at(-1)?.image;
      throw new ProvisionerError(
        "timeout",
        withOutput(
          `the tenant did not report ready${image ? ` with ${image}` : ""} within ${Math.round(deadlineMs / 1000)} s` +
            (seen ? ` (it reported ready with ${seen})` : ""),
        ),
        false,
      );
    }
    await pauseUnlessAborted(sleep, pollMs, signal, "tenant");
  }
}

/** Sets the org's status, fenced by the attempt, unless it is being deleted (a delete's status wins). */
async function setStatus(
  deps: ControlPlaneDeps,
  attempt: AttemptContext,
  orgId: string,
  status: "stopped" | "provisioning",
) {
  await attempt.fenced((tx) =>
    tx
      .update(cpOrgs)
      .set({ status, updatedAt: deps.clock.now() })
      .where(and(eq(cpOrgs.id, orgId), notInArray(cpOrgs.status, ["deleting", "deleted"]))),
  );
}

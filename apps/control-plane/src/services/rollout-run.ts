/**
 * Runs one workspace rollout (a cp_rollouts row) through the tenants' own APIs: phase by phase as its plan says
 * (canaries first, then batches of tenants side by side), each tenant's workspaces one at a time, each redeploy
 * waited for until the tenant reports it succeeded (its agent online again). After the canary phase every canary
 * workspace that was redeployed must stay online for the whole soak. The first failure stops the rollout.
 *
 * Resuming: each tenant's result, and each workspace's before its redeploy is asked for, is written to the row as it
 * happens, and the redeploy's Idempotency-Key is the rollout's id and the workspace's id; so an attempt after a crash
 * skips tenants and workspaces already finished and, for a redeploy it had asked for, gets the same tenant operation
 * back instead of a second redeploy.
 */
import type { OperationView, RolloutWorkspace, WorkspaceView } from "@molecule/contracts";
import {
  ProvisionerError,
  pauseUnlessAborted,
  type Scrubber,
  type StepReporter,
} from "@molecule/provisioner-core";
import type { AttemptContext } from "@molecule/service-kit/runner";
import { AttemptSuperseded, OperationSuperseded } from "@molecule/service-kit/runner";
import { eq, sql } from "drizzle-orm";
import { type CpRolloutRow, cpOrgs, cpRollouts, type RolloutTenantProgress } from "../db/schema.ts";
import type { ControlPlaneDeps } from "./deps.ts";
import type { RolloutEvents } from "./rollout-events.ts";
import { type TenantApi, tenantApi } from "./tenant-api.ts";

/** Workspaces whose agent is live: only these are redeployed (the others are skipped, with the reason). */
export const REDEPLOYABLE_STATUSES: readonly string[] = ["online", "degraded"];
const EXTERNAL_RUNTIME = "external";
const POLL_MS = 1_000;
const SOAK_POLL_MS = 2_000;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** What a rollout would do to one workspace as it stands now: redeploy it, or skip it and why. */
export function plannedOutcome(workspace: WorkspaceView): RolloutWorkspace {
  const base = { id: workspace.id, name: workspace.name, status: workspace.status };
  if (workspace.runtime === EXTERNAL_RUNTIME) {
    return { ...base, outcome: "skipped", reason: "an external agent: it runs outside the platform" };
  }
  if (!REDEPLOYABLE_STATUSES.includes(workspace.status)) {
    return { ...base, outcome: "skipped", reason: `it is ${workspace.status}, not online` };
  }
  return { ...base, outcome: "redeploy" };
}

/** The tenant's workspaces in the order a rollout takes them: oldest first. */
export function rolloutOrder(workspaces: WorkspaceView[]): WorkspaceView[] {
  return [...workspaces].sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
}

class RolloutRun {
  private readonly progress: Record<string, RolloutTenantProgress>;

  constructor(
    private readonly deps: ControlPlaneDeps,
    private readonly events: RolloutEvents,
    private readonly row: CpRolloutRow,
    private readonly step: StepReporter,
    private readonly scrub: Scrubber,
    private readonly attempt: AttemptContext,
  ) {
    this.progress = structuredClone(row.tenants);
  }

  async run(): Promise<void> {
    const { plan } = this.row;
    const soakDone = this.row.steps.some((step) => step.name === "soak_passed");
    for (const [index, phase] of plan.phases.entries()) {
      await this.checkCancelled();
      const todo = phase.tenants.filter((tenant) => !this.finished(tenant.slug));
      if (todo.length > 0) {
        this.step("phase_started", `${phase.name}: ${todo.map((tenant) => tenant.slug).join(", ")}`);
        const failures = (await Promise.all(todo.map((tenant) => this.tenant(tenant, phase.name)))).filter(
          (failure): failure is string => failure !== null,
        );
        if (failures.length > 0) this.stop(failures, index);
      }
      if (phase.canary && plan.soakSeconds > 0 && !soakDone) await this.soak(phase.tenants, index);
    }
  }

  private finished(slug: string): boolean {
    const status = this.progress[slug]?.status;
    return status === "succeeded" || status === "skipped";
  }

  /** Throws the rollout's failure: what failed, and how many tenants were left untouched. */
  private stop(failures: string[], phaseIndex: number): never {
    const untouched = this.row.plan.phases
      .slice(phaseIndex + 1)
      .reduce((count, phase) => count + phase.tenants.length, 0);
    throw new ProvisionerError(
      "backend_error",
      `${failures.join("; ")}; the rollout stopped with ${untouched} tenant(s) not started`,
      false,
    );
  }

  private async checkCancelled(): Promise<void> {
    const [row] = await this.deps.db
      .select({ cancelRequestedAt: cpRollouts.cancelRequestedAt })
      .from(cpRollouts)
      .where(eq(cpRollouts.id, this.row.id));
    if (row?.cancelRequestedAt) throw new OperationSuperseded("cancelled by an operator");
  }

  /** Writes one tenant's progress, fenced: an attempt abandoned or overtaken by another runner writes nothing. */
  private async record(slug: string, progress: RolloutTenantProgress): Promise<void> {
    this.progress[slug] = progress;
    await this.attempt.fenced((tx) =>
      tx
        .update(cpRollouts)
        .set({
          tenants: sql`jsonb_set(${cpRollouts.tenants}, ${`{${slug}}`}::text[], ${JSON.stringify(progress)}::jsonb)`,
          updatedAt: this.deps.clock.now(),
        })
        .where(eq(cpRollouts.id, this.row.id)),
    );
  }

  private publish(type: "rollout.tenant" | "rollout.workspace", workspaceId: string | null, data: object) {
    this.events.publish({ type, workspaceId, data: { rolloutId: this.row.id, ...data } });
  }

  /** One tenant, its workspaces one at a time; answers its failure in words, or null. */
  private async tenant(target: { slug: string; orgId: string }, phase: string): Promise<string | null> {
    const { slug } = target;
    const previous = this.progress[slug];
    const workspaces = [...(previous?.workspaces ?? [])];
    const save = async (status: RolloutTenantProgress["status"], error: string | null = null) => {
      await this.record(slug, { status, workspaces, error });
      this.publish("rollout.tenant", null, { slug, phase, status, ...(error ? { error } : {}) });
    };
    const [org] = await this.deps.db.select().from(cpOrgs).where(eq(cpOrgs.id, target.orgId));
    if (!org || org.status !== "ready") {
      await save("skipped", `the org is ${org?.status ?? "gone"}`);
      return null;
    }
    await save("running");
    try {
      const api = tenantApi(this.deps, org, this.scrub);
      for (const workspace of rolloutOrder(await api.listWorkspaces(this.attempt.signal))) {
        const at = workspaces.findIndex((entry) => entry.id === workspace.id);
        const known = at === -1 ? undefined : workspaces[at];
        if (known && known.outcome !== "redeploy") continue;
        await this.checkCancelled();
        // Asked for before (a resumed attempt): the same key gets the same operation back, whatever the status now.
        const entry = known ?? plannedOutcome(workspace);
        const put = async (value: RolloutWorkspace) => {
          const index = workspaces.findIndex((item) => item.id === value.id);
          if (index === -1) workspaces.push(value);
          else workspaces[index] = value;
          await this.record(slug, { status: "running", workspaces, error: null });
          this.publish("rollout.workspace", value.id, {
            slug,
            outcome: value.outcome,
            ...(value.operation_id ? { operationId: value.operation_id } : {}),
          });
        };
        await put(entry);
        if (entry.outcome !== "redeploy") continue;
        const outcome = await this.redeploy(api, entry);
        await put(outcome);
        if (outcome.outcome === "failed") {
          const error = `tenant ${slug}: workspace ${workspace.id} ${outcome.reason}`;
          await save("failed", error);
          return error;
        }
      }
      await save("succeeded");
      return null;
    } catch (error) {
      if (error instanceof OperationSuperseded || error instanceof AttemptSuperseded) throw error;
      this.attempt.ensureCurrent();
      const message = `tenant ${slug}: ${error instanceof ProvisionerError ? this.scrub.text(error.message) : "unexpected error; see the control plane log"}`;
      if (!(error instanceof ProvisionerError)) {
        this.deps.logger.error(
          { err: this.scrub.error(error), rolloutId: this.row.id, slug },
          "rollout tenant failed",
        );
      }
      await save("failed", message);
      return message;
    }
  }

  /** Asks the tenant for the redeploy (or gets the one asked for before) and waits until it ends. */
  private async redeploy(api: TenantApi, entry: RolloutWorkspace): Promise<RolloutWorkspace> {
    const { signal } = this.attempt;
    let operation: OperationView;
    try {
      operation = await api.redeploy(entry.id, `${this.row.id}:${entry.id}`, signal);
    } catch (error) {
      // Deleted, stopped or being changed since it was listed: nothing of the rollout's to do.
      if (error instanceof ProvisionerError && (error.code === "not_found" || error.code === "conflict")) {
        return {
          ...entry,
          outcome: "skipped",
          reason: "it changed before its redeploy: it is no longer online",
        };
      }
      throw error;
    }
    for (;;) {
      if (operation.status === "succeeded")
        return { ...entry, outcome: "redeployed", operation_id: operation.id };
      if (operation.status === "failed") {
        const why = operation.error
          ? `${operation.error.code}: ${operation.error.message}`
          : "no error recorded";
        return {
          ...entry,
          outcome: "failed",
          operation_id: operation.id,
          reason: `redeploy failed (${why})`,
        };
      }
      await pauseUnlessAborted(sleep, POLL_MS, signal, "rollout");
      operation = await api.operation(operation.id, signal);
    }
  }

  /**
   * The soak: for `soakSeconds`, every canary workspace this rollout redeployed must be online each time it is looked
   * at. One that is not fails its tenant and stops the rollout before any other tenant is touched.
   */
  private async soak(canaries: { slug: string; orgId: string }[], phaseIndex: number): Promise<void> {
    const { clock } = this.deps;
    const seconds = this.row.plan.soakSeconds;
    this.step("soak_started", `${seconds} s`);
    const until = clock.now().getTime() + seconds * 1000;
    const apis = new Map<string, TenantApi>();
    for (;;) {
      await this.checkCancelled();
      for (const canary of canaries) {
        const problem = await this.soakProblem(canary, apis);
        if (problem) {
          const progress = this.progress[canary.slug];
          const error = `canary ${canary.slug} during the soak: ${problem}`;
          await this.record(canary.slug, { status: "failed", workspaces: progress?.workspaces ?? [], error });
          this.publish("rollout.tenant", null, { slug: canary.slug, phase: "soak", status: "failed", error });
          this.stop([error], phaseIndex);
        }
      }
      if (clock.now().getTime() >= until) break;
      await pauseUnlessAborted(
        sleep,
        Math.min(SOAK_POLL_MS, until - clock.now().getTime()),
        this.attempt.signal,
        "soak",
      );
    }
    this.step("soak_passed", `${seconds} s`);
  }

  /** What is wrong with one canary now (a redeployed workspace not online), or null. */
  private async soakProblem(
    canary: { slug: string; orgId: string },
    apis: Map<string, TenantApi>,
  ): Promise<string | null> {
    const watched = (this.progress[canary.slug]?.workspaces ?? []).filter(
      (entry) => entry.outcome === "redeployed",
    );
    if (watched.length === 0) return null;
    let api = apis.get(canary.slug);
    try {
      if (!api) {
        const [org] = await this.deps.db.select().from(cpOrgs).where(eq(cpOrgs.id, canary.orgId));
        if (!org) return null;
        api = tenantApi(this.deps, org, this.scrub);
        apis.set(canary.slug, api);
      }
      const now = new Map((await api.listWorkspaces(this.attempt.signal)).map((ws) => [ws.id, ws]));
      for (const entry of watched) {
        const current = now.get(entry.id);
        // A workspace its owner deleted meanwhile says nothing about the image.
        if (current && current.status !== "online") {
          return `workspace ${entry.id} is ${current.status}${current.statusReason ? ` (${current.statusReason})` : ""}`;
        }
      }
      return null;
    } catch (error) {
      if (error instanceof ProvisionerError)
        return `its tenant did not answer: ${this.scrub.text(error.message)}`;
      throw error;
    }
  }
}

export async function performRollout(
  deps: ControlPlaneDeps,
  row: CpRolloutRow,
  step: StepReporter,
  scrub: Scrubber,
  attempt: AttemptContext,
): Promise<void> {
  await new RolloutRun(deps, deps.events, row, step, scrub, attempt).run();
}

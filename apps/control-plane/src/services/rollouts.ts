/**
 * Workspace rollouts as the operator asks for them: a plan (which tenants, in which phase), then either the plan
 * answered as a dry run (the tenants' workspaces read, nothing changed, nothing recorded) or a cp_rollouts row the
 * rollout runner takes (rollout-run.ts). Read back, listed and cancelled here.
 */
import {
  DomainError,
  type FleetRedeployBody,
  type RolloutScope,
  type RolloutTenant,
  type RolloutView,
} from "@molecule/contracts";
import { ProvisionerError, Scrubber } from "@molecule/provisioner-core";
import { and, asc, desc, eq, inArray, ne } from "drizzle-orm";
import { type CpOrgRow, type CpRolloutRow, cpOrgs, cpRollouts, type RolloutPlan } from "../db/schema.ts";
import type { ControlPlaneDeps } from "./deps.ts";
import { plannedOutcome, rolloutOrder } from "./rollout-run.ts";
import { tenantApi } from "./tenant-api.ts";
import { rolloutView } from "./views.ts";

/** Rollouts run one at a time, in the order they were asked for: they all share this runner subject. */
export const ROLLOUT_SUBJECT = "workspace_rollouts";

export class RolloutService {
  constructor(
    private readonly deps: ControlPlaneDeps,
    private readonly onQueued: () => void = () => {},
  ) {}

  /** One tenant's workspaces: unknown slug 404, a tenant that is not ready 409. */
  async tenant(slug: string, dryRun: boolean): Promise<{ rollout: RolloutView; queued: boolean }> {
    const org = await this.liveOrg(slug);
    if (!org) throw new DomainError("not_found", `no org with slug "${slug}"`);
    this.assertReady(org);
    const plan: RolloutPlan = {
      canarySlugs: [],
      batchSize: 1,
      soakSeconds: 0,
      phases: [{ name: "tenant", canary: false, tenants: [{ slug: org.slug, orgId: org.id }] }],
    };
    return this.begin("tenant", plan, dryRun);
  }

  /**
   * Every ready tenant: the canaries (each must be a ready org; unknown is 400, not ready 409) as the first phase,
   * then the rest in slug order, `batch_size` at a time.
   */
  async fleet(body: FleetRedeployBody): Promise<{ rollout: RolloutView; queued: boolean }> {
    const canaries: CpOrgRow[] = [];
    for (const slug of body.canary_slugs) {
      const org = await this.liveOrg(slug);
      if (!org) throw new DomainError("bad_request", `canary_slugs: no org with slug "${slug}"`);
      this.assertReady(org);
      canaries.push(org);
    }
    const canaryIds = new Set(canaries.map((org) => org.id));
    const rest = (
      await this.deps.db.select().from(cpOrgs).where(eq(cpOrgs.status, "ready")).orderBy(asc(cpOrgs.slug))
    ).filter((org) => !canaryIds.has(org.id));
    const ref = (org: CpOrgRow) => ({ slug: org.slug, orgId: org.id });
    const phases: RolloutPlan["phases"] = [];
    if (canaries.length > 0) phases.push({ name: "canary", canary: true, tenants: canaries.map(ref) });
    for (let start = 0; start < rest.length; start += body.batch_size) {
      phases.push({
        name: `batch ${phases.filter((phase) => !phase.canary).length + 1}`,
        canary: false,
        tenants: rest.slice(start, start + body.batch_size).map(ref),
      });
    }
    const plan: RolloutPlan = {
      canarySlugs: body.canary_slugs,
      batchSize: body.batch_size,
      soakSeconds: canaries.length > 0 ? body.soak_seconds : 0,
      phases,
    };
    return this.begin("fleet", plan, body.dry_run);
  }

  async get(id: string): Promise<RolloutView> {
    return rolloutView(await this.row(id));
  }

  async list(): Promise<RolloutView[]> {
    const rows = await this.deps.db.select().from(cpRollouts).orderBy(desc(cpRollouts.createdAt)).limit(50);
    return rows.map(rolloutView);
  }

  /**
   * A queued rollout ends at once as cancelled; a running one is asked to stop, which it does before its next
   * workspace, phase or soak check (a workspace redeploy already asked of a tenant finishes there). 409 once ended.
   */
  async cancel(id: string): Promise<RolloutView> {
    const now = this.deps.clock.now();
    const row = await this.row(id);
    if (row.status === "succeeded" || row.status === "failed") {
      throw new DomainError("conflict", `rollout ${id} already ended (${rolloutView(row).status})`);
    }
    await this.deps.db
      .update(cpRollouts)
      .set({ cancelRequestedAt: row.cancelRequestedAt ?? now, updatedAt: now })
      .where(eq(cpRollouts.id, id));
    const [ended] = await this.deps.db
      .update(cpRollouts)
      .set({
        status: "failed",
        error: { code: "superseded", message: "cancelled by an operator", retryable: false },
        finishedAt: now,
        updatedAt: now,
      })
      .where(and(eq(cpRollouts.id, id), eq(cpRollouts.status, "pending")))
      .returning();
    if (ended) {
      this.deps.events.publish({
        type: "rollout.finished",
        workspaceId: null,
        data: { rolloutId: id, status: "cancelled" },
      });
    }
    return rolloutView(await this.row(id));
  }

  private async row(id: string): Promise<CpRolloutRow> {
    const [row] = await this.deps.db.select().from(cpRollouts).where(eq(cpRollouts.id, id));
    if (!row) throw new DomainError("not_found", `rollout ${id} not found`);
    return row;
  }

  private async liveOrg(slug: string): Promise<CpOrgRow | undefined> {
    const [org] = await this.deps.db
      .select()
      .from(cpOrgs)
      .where(and(eq(cpOrgs.slug, slug), ne(cpOrgs.status, "deleted")));
    return org;
  }

  private assertReady(org: CpOrgRow): void {
    if (org.status !== "ready" || !org.tenantUrl) {
      throw new DomainError("conflict", `the tenant of "${org.slug}" is not ready (${org.status})`, {
        status: org.status,
      });
    }
  }

  private async begin(
    scope: RolloutScope,
    plan: RolloutPlan,
    dryRun: boolean,
  ): Promise<{ rollout: RolloutView; queued: boolean }> {
    if (dryRun) return { rollout: await this.dryRun(scope, plan), queued: false };
    const [row] = await this.deps.db
      .insert(cpRollouts)
      .values({ id: this.deps.ids.next("op"), kind: scope, subject: ROLLOUT_SUBJECT, plan })
      .returning();
    if (!row) throw new Error("the rollout row was not written");
    this.deps.events.publish({
      type: "rollout.queued",
      workspaceId: null,
      data: {
        rolloutId: row.id,
        scope,
        tenants: plan.phases.reduce((n, phase) => n + phase.tenants.length, 0),
      },
    });
    this.onQueued();
    return { rollout: rolloutView(row), queued: true };
  }

  /** The plan with each tenant's workspaces as they stand and what would happen to each; only GETs reach tenants. */
  private async dryRun(scope: RolloutScope, plan: RolloutPlan): Promise<RolloutView> {
    const orgs = new Map(
      (
        await this.deps.db
          .select()
          .from(cpOrgs)
          .where(
            inArray(cpOrgs.id, ["", ...plan.phases.flatMap((phase) => phase.tenants.map((t) => t.orgId))]),
          )
      ).map((org) => [org.id, org]),
    );
    const tenants: RolloutTenant[] = [];
    for (const phase of plan.phases) {
      for (const target of phase.tenants) {
        const line: RolloutTenant = {
          slug: target.slug,
          org_id: target.orgId,
          phase: phase.name,
          status: "pending",
          workspaces: [],
          error: null,
        };
        const org = orgs.get(target.orgId);
        const scrub = new Scrubber();
        try {
          if (!org) throw new ProvisionerError("not_found", "the org is gone", false);
          const listed = await tenantApi(this.deps, org, scrub).listWorkspaces();
          line.workspaces = rolloutOrder(listed).map(plannedOutcome);
        } catch (error) {
          if (!(error instanceof ProvisionerError)) throw error;
          line.error = scrub.text(error.message);
        }
        tenants.push(line);
      }
    }
    return {
      id: null,
      scope,
      status: "pending",
      dry_run: true,
      canary_slugs: plan.canarySlugs,
      batch_size: plan.batchSize,
      soak_seconds: plan.soakSeconds,
      tenants,
      steps: [],
      error: null,
      cancel_requested: false,
      created_at: null,
      finished_at: null,
    };
  }
}

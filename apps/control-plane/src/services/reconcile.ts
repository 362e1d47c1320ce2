import type { AdminStats, GhostClaim } from "@molecule/contracts";
import type { ManagedResource } from "@molecule/provisioner-core";
import { openProviderIds, resolveIntents, tenantAuditBackend } from "@molecule/service-kit/audit";
import {
  missingCompute,
  processReplicaId,
  Reconciler,
  type ReconcileSource,
} from "@molecule/service-kit/reconcile";
import { tableReconcileStore } from "@molecule/service-kit/reconcile-runs";
import { operationStats, reconcileStats } from "@molecule/service-kit/stats";
import { and, eq, inArray, ne, notExists, sql } from "drizzle-orm";
import {
  cpOperations,
  cpOrgs,
  cpOrphanSightings,
  cpReconcileRuns,
  cpTenantResources,
  cpWorkspaces,
} from "../db/schema.ts";
import type { ControlPlaneDeps } from "./deps.ts";

/** The control plane's reconcile lock (a tenant platform's is another; both may share one database server). */
export const CP_RECONCILE_LOCK = 74_201_322;

/** What the control plane last made a workspace that must have its machine, container or instance. */
const HELD_WORKSPACE_STATES = ["running", "stopped", "suspended"];

/** No org or workspace operation pending or running on the subject: nothing is changing it right now. */
const quietSubject = (deps: ControlPlaneDeps, subject: typeof cpOrgs.id | typeof cpWorkspaces.id) =>
  notExists(
    deps.db
      .select({ one: sql`1` })
      .from(cpOperations)
      .where(and(eq(cpOperations.subject, subject), inArray(cpOperations.status, ["pending", "running"]))),
  );

/**
 * The workspace backend (every org's workspaces). Claims are workspace rows not destroyed; a row the control plane
 * made running, stopped or suspended with no machine listed becomes `failed` (the tenant sees it through the
 * workspace's status).
 */
function workspaceSource(deps: ControlPlaneDeps): ReconcileSource {
  const { db, provisioner, clock, logger } = deps;
  const rowOrg = async (workspaceId: string) =>
    (
      await db
        .select({ orgId: cpWorkspaces.orgId })
        .from(cpWorkspaces)
        .where(eq(cpWorkspaces.id, workspaceId))
    )[0]?.orgId ?? null;
  return {
    backend: provisioner.name,
    list: () => provisioner.listManaged(),
    async judge(resources) {
      // a create that crashed before its claim left an intent: the listing says what it made
      await resolveIntents(
        db,
        cpTenantResources,
        provisioner.name,
        resources,
        (r) => r.workspaceId,
        clock.now(),
      );
      const audited = await openProviderIds(db, cpTenantResources, provisioner.name);
      const rows = await db
        .select({
          id: cpWorkspaces.id,
          orgId: cpWorkspaces.orgId,
          pool: cpWorkspaces.pool,
          poolClaimedAt: cpWorkspaces.poolClaimedAt,
        })
        .from(cpWorkspaces)
        .where(ne(cpWorkspaces.state, "destroyed"));
      const claimed = new Set(rows.map((row) => row.id));
      // A tenant's unclaimed warm pool members, counted per org and pool: claimed by their row all the same.
      const poolOf = new Map(
        rows
          .filter((row) => row.pool !== null && row.poolClaimedAt === null)
          .map((row) => [row.id, `${row.orgId}/${row.pool}`]),
      );
      const quiet = await db
        .select({ id: cpWorkspaces.id, orgId: cpWorkspaces.orgId, state: cpWorkspaces.state })
        .from(cpWorkspaces)
        .where(and(inArray(cpWorkspaces.state, HELD_WORKSPACE_STATES), quietSubject(deps, cpWorkspaces.id)));
      const ghosts: GhostClaim[] = [];
      for (const row of missingCompute(quiet, resources)) {
        const reason = `the reconciler found no ${provisioner.name} machine, container or instance for this workspace`;
        const failed = await db
          .update(cpWorkspaces)
          .set({ state: "failed", updatedAt: clock.now() })
          .where(and(eq(cpWorkspaces.id, row.id), eq(cpWorkspaces.state, row.state)))
          .returning({ id: cpWorkspaces.id });
        if (failed.length > 0) logger.warn({ workspaceId: row.id, from: row.state }, `reconcile: ${reason}`);
        ghosts.push({
          backend: provisioner.name,
          subject: "workspace",
          id: row.id,
          org_id: row.orgId,
          status: row.state,
          reason,
          action: failed.length > 0 ? "marked_failed" : "reported",
        });
      }
      return {
        claimed: (resource: ManagedResource) =>
          (!!resource.workspaceId && claimed.has(resource.workspaceId)) || audited.has(resource.id),
        poolMember: (resource: ManagedResource) =>
          (resource.workspaceId && poolOf.get(resource.workspaceId)) || null,
        ghosts,
      };
    },
    async destroy(resource) {
      if (!resource.workspaceId) throw new Error(`${resource.kind} ${resource.id} names no workspace`);
      // A resource without an owner label (a Fly volume never attached carries no metadata, only its name) takes
      // its org from the workspace's row; one this control plane never had a row for is only reported.
      const orgId = resource.orgId ?? (await rowOrg(resource.workspaceId));
      if (!orgId) {
        throw new Error(
          `${resource.kind} ${resource.id} names no org and no workspace this control plane had`,
        );
      }
      // the backend's own destroy path: it removes only what carries this deployment's labels or tags
      await provisioner.destroy({ workspaceId: resource.workspaceId, orgId, handle: null });
    },
  };
}

/**
 * The tenant backend (one tenant per org, with what the org's tenant owns, e.g. its EC2 groups). Claims are orgs not
 * deleted; a ready org with no tenant container or instance listed is reported (an operator re-provisions or deletes
 * it: the org's status is its operations' to change).
 */
function tenantSource(deps: ControlPlaneDeps): ReconcileSource {
  const { db, tenants, clock } = deps;
  const backend = tenantAuditBackend(tenants.name);
  return {
    backend,
    list: () => tenants.listManaged(),
    async judge(resources) {
      await resolveIntents(db, cpTenantResources, backend, resources, (r) => r.orgId, clock.now());
      const audited = await openProviderIds(db, cpTenantResources, backend);
      const live = await db
        .select({ id: cpOrgs.id, status: cpOrgs.status })
        .from(cpOrgs)
        .where(ne(cpOrgs.status, "deleted"));
      const claimed = new Set(live.map((row) => row.id));
      const quiet = await db
        .select({ id: cpOrgs.id, status: cpOrgs.status })
        .from(cpOrgs)
        .where(and(eq(cpOrgs.status, "ready"), quietSubject(deps, cpOrgs.id)));
      const ghosts: GhostClaim[] = missingCompute(quiet, resources, (resource) => resource.orgId).map(
        (row) => ({
          backend,
          subject: "tenant",
          id: row.id,
          org_id: row.id,
          status: row.status,
          reason: `the reconciler found no ${tenants.name} tenant container or instance for this org`,
          action: "reported",
        }),
      );
      return {
        claimed: (resource: ManagedResource) =>
          (!!resource.orgId && claimed.has(resource.orgId)) || audited.has(resource.id),
        ghosts,
      };
    },
    async destroy(resource) {
      if (!resource.orgId) throw new Error(`${resource.kind} ${resource.id} names no org`);
      const [org] = await db.select({ slug: cpOrgs.slug }).from(cpOrgs).where(eq(cpOrgs.id, resource.orgId));
      if (!org) throw new Error(`${resource.kind} ${resource.id} names an org this control plane never had`);
      // the backend's org sweep: everything of this deployment and environment tagged with that org
      await tenants.sweepOrg({ orgId: resource.orgId, slug: org.slug, handle: null });
    },
  };
}

/** `replica` names this process in the passes it records (main passes the id its runner claims with). */
export function createControlPlaneReconciler(
  deps: ControlPlaneDeps,
  replica = processReplicaId(),
): Reconciler {
  return new Reconciler({
    store: tableReconcileStore(deps.db, { runs: cpReconcileRuns, sightings: cpOrphanSightings }),
    replica,
    ids: deps.ids,
    sources: () => [workspaceSource(deps), ...(deps.tenants.ownsNothing ? [] : [tenantSource(deps)])],
    lock: deps.advisoryLock,
    lockKey: CP_RECONCILE_LOCK,
    clock: deps.clock,
    logger: deps.logger,
    settings: deps.settings.reconcile,
  });
}

export async function controlPlaneStats(deps: ControlPlaneDeps, reconciler: Reconciler): Promise<AdminStats> {
  return {
    ...reconcileStats(await reconciler.lastReport()),
    ...(await operationStats(deps.db, cpOperations, deps.clock.now())),
  };
}

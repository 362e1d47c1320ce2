import {
  type AdminStats,
  EXTERNAL_RUNTIME,
  type GhostClaim,
  LIVE_STATUSES,
  type WorkspaceStatus,
} from "@molecule/contracts";
import {
  operations,
  orphanSightings,
  poolMembers,
  reconcileRuns,
  workspaceResources,
  workspaces,
} from "@molecule/db";
import { type ManagedResource, poolLabel } from "@molecule/provisioner-core";
import { openProviderIds, resolveIntents } from "@molecule/service-kit/audit";
import {
  missingCompute,
  processReplicaId,
  Reconciler,
  type ReconcileSource,
} from "@molecule/service-kit/reconcile";
import { tableReconcileStore } from "@molecule/service-kit/reconcile-runs";
import { operationStats, reconcileStats } from "@molecule/service-kit/stats";
import { and, eq, inArray, ne, notExists, sql } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";
import { transitionWorkspace } from "./transitions.ts";

/** The tenant platform's reconcile lock (the control plane's is another; both may share one database server). */
export const TENANT_RECONCILE_LOCK = 74_201_321;

/** Statuses whose workspace must have its machine or container, reported as a ghost when it has none. */
const HELD_STATUSES: readonly WorkspaceStatus[] = [...LIVE_STATUSES, "stopped", "suspended"];

/**
 * The one backend a tenant platform drives (docker, flyio, or the control plane's, which lists the org's workspaces
 * there). Claims are this org's workspace rows that are not removed; resources of another org on the same engine or
 * Fly app are not this platform's and are left alone.
 */
function workspaceSource(deps: PlatformDeps): ReconcileSource {
  const { db, provisioner, settings, logger } = deps;
  return {
    backend: provisioner.name,
    list: async () =>
      (await provisioner.listManaged()).filter(
        (resource) => resource.orgId === null || resource.orgId === settings.orgId,
      ),
    async judge(resources) {
      // a create that crashed before its claim left an intent: the listing says what it made
      await resolveIntents(
        db,
        workspaceResources,
        provisioner.name,
        resources,
        (r) => r.workspaceId,
        deps.clock.now(),
      );
      const audited = await openProviderIds(db, workspaceResources, provisioner.name);
      const rows = await db
        .select({ id: workspaces.id, status: workspaces.status, runtime: workspaces.runtime })
        .from(workspaces)
        .where(and(eq(workspaces.orgId, settings.orgId), ne(workspaces.status, "removed")));
      const claimed = new Set(rows.map((row) => row.id));
      // Unclaimed warm pool members are the pool filler's: counted, never orphans. A claimed one is a workspace row.
      const members = await db
        .select({ id: poolMembers.id, runtime: poolMembers.runtime, tier: poolMembers.tier })
        .from(poolMembers)
        .where(and(eq(poolMembers.orgId, settings.orgId), ne(poolMembers.state, "claimed")));
      const poolOf = new Map(members.map((member) => [member.id, poolLabel(member.runtime, member.tier)]));
      const quiet = await db
        .select({ id: workspaces.id, status: workspaces.status })
        .from(workspaces)
        .where(
          and(
            eq(workspaces.orgId, settings.orgId),
            inArray(workspaces.status, [...HELD_STATUSES]),
            ne(workspaces.runtime, EXTERNAL_RUNTIME),
            notExists(
              db
                .select({ one: sql`1` })
                .from(operations)
                .where(
                  and(
                    eq(operations.workspaceId, workspaces.id),
                    inArray(operations.status, ["pending", "running"]),
                  ),
                ),
            ),
          ),
        );
      const ghosts: GhostClaim[] = [];
      for (const row of missingCompute(quiet, resources)) {
        const reason = `the reconciler found no ${provisioner.name} machine or container for this workspace`;
        const failed =
          LIVE_STATUSES.includes(row.status) &&
          (await transitionWorkspace(deps, row.id, "failed", { from: [row.status], reason }));
        if (failed)
          logger.warn(
            { workspaceId: row.id, from: row.status },
            "reconcile: workspace failed: resource gone",
          );
        ghosts.push({
          backend: provisioner.name,
          subject: "workspace",
          id: row.id,
          org_id: settings.orgId,
          status: row.status,
          reason,
          action: failed ? "marked_failed" : "reported",
        });
      }
      return {
        claimed: (resource: ManagedResource) =>
          (!!resource.workspaceId && claimed.has(resource.workspaceId)) || audited.has(resource.id),
        ghosts,
        poolMember: (resource: ManagedResource) =>
          (resource.workspaceId && poolOf.get(resource.workspaceId)) || null,
      };
    },
    async destroy(resource) {
      if (!resource.workspaceId) throw new Error(`${resource.kind} ${resource.id} names no workspace`);
      // the backend's own destroy path: it removes only what carries this deployment's labels
      await provisioner.destroy({ workspaceId: resource.workspaceId, orgId: settings.orgId, handle: null });
    },
  };
}

/** `replica` names this process in the passes it records (main passes the id its runner claims with). */
export function createTenantReconciler(deps: PlatformDeps, replica = processReplicaId()): Reconciler {
  return new Reconciler({
    store: tableReconcileStore(deps.db, { runs: reconcileRuns, sightings: orphanSightings }),
    replica,
    ids: deps.ids,
    sources: () => [workspaceSource(deps)],
    lock: deps.advisoryLock,
    lockKey: TENANT_RECONCILE_LOCK,
    clock: deps.clock,
    logger: deps.logger,
    settings: deps.settings.reconcile,
  });
}

export async function tenantStats(deps: PlatformDeps, reconciler: Reconciler): Promise<AdminStats> {
  return {
    ...reconcileStats(await reconciler.lastReport()),
    ...(await operationStats(deps.db, operations, deps.clock.now())),
  };
}

import { backupRuns, operations, poolMembers, reconcileRuns, workspaces } from "@molecule/db";
import { pruneReconcileRuns } from "@molecule/service-kit/reconcile-runs";
import {
  finishedOperations,
  pruneBackupRecords,
  RetentionSweeper,
  type RetentionTarget,
} from "@molecule/service-kit/retention";
import type { OperationsTable } from "@molecule/service-kit/runner";
import { and, eq, exists, lt, notExists, or, sql } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";

/** The tenant platform's retention lock key (its reconciler's is 74_201_321). */
export const TENANT_RETENTION_LOCK = 74_201_323;

export interface TenantRetentionSettings {
  /** OPERATION_RETENTION_DAYS: finished operations older than this are deleted. */
  operationsMs: number;
  /** BACKUP_RECORD_RETENTION_DAYS: backup runs older than this are deleted (the newest and newest good one stay). */
  backupRecordsMs: number;
  sweepIntervalMs: number;
}

/**
 * Warm pool members claimed by workspaces removed before `now - retentionMs` (counted from the removal), or claimed
 * before then by a workspace whose row is gone: nothing reads them any more (`GET /pools` counts the members claimed
 * by workspaces not removed, and a claim is delivered only to a live workspace). Members still in their pool, and
 * claimed ones whose workspace lives, stay; a destroyed member's row went with it.
 */
export function claimedPoolMembers(db: PlatformDeps["db"], retentionMs: number): RetentionTarget {
  return {
    name: "poolMembers",
    prune: async (now) => {
      const cutoff = new Date(now.getTime() - retentionMs);
      const itsWorkspace = eq(workspaces.id, poolMembers.id);
      const deleted = await db
        .delete(poolMembers)
        .where(
          and(
            eq(poolMembers.state, "claimed"),
            or(
              exists(
                db
                  .select({ one: sql`1` })
                  .from(workspaces)
                  .where(
                    and(itsWorkspace, eq(workspaces.status, "removed"), lt(workspaces.updatedAt, cutoff)),
                  ),
              ),
              and(
                notExists(db.select({ one: sql`1` }).from(workspaces).where(itsWorkspace)),
                lt(poolMembers.claimedAt, cutoff),
              ),
            ),
          ),
        )
        .returning({ id: poolMembers.id });
      return deleted.length;
    },
  };
}

/**
 * Prunes finished operations and reconcile passes past OPERATION_RETENTION_DAYS (the newest pass is kept), with the
 * warm pool members claimed by workspaces removed as long ago, and finished backup runs past
 * BACKUP_RECORD_RETENTION_DAYS (the newest attempt, which says whether one is due, and the newest good one are
 * kept). Workspace rows, removed ones included, are never deleted, and neither is a pending or running operation.
 * (Events are not stored here: they travel through LISTEN/NOTIFY.)
 */
export function createTenantRetention(
  deps: PlatformDeps,
  settings: TenantRetentionSettings,
): RetentionSweeper {
  return new RetentionSweeper(
    {
      lock: deps.advisoryLock,
      lockKey: TENANT_RETENTION_LOCK,
      clock: deps.clock,
      logger: deps.logger,
      intervalMs: settings.sweepIntervalMs,
    },
    [
      finishedOperations(deps.db, operations as unknown as OperationsTable, settings.operationsMs),
      pruneReconcileRuns(deps.db, reconcileRuns, settings.operationsMs),
      claimedPoolMembers(deps.db, settings.operationsMs),
      pruneBackupRecords(
        deps.db,
        {
          table: backupRuns,
          id: backupRuns.id,
          status: backupRuns.status,
          startedAt: backupRuns.startedAt,
          finishedAt: backupRuns.finishedAt,
        },
        settings.backupRecordsMs,
      ),
    ],
  );
}

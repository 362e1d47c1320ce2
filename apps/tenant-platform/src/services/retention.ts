import { backupRuns, operations, reconcileRuns } from "@molecule/db";
import { pruneReconcileRuns } from "@molecule/service-kit/reconcile-runs";
import { finishedOperations, pruneBackupRecords, RetentionSweeper } from "@molecule/service-kit/retention";
import type { OperationsTable } from "@molecule/service-kit/runner";
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
 * Prunes finished operations and reconcile passes past OPERATION_RETENTION_DAYS (the newest pass is kept), and
 * finished backup runs past BACKUP_RECORD_RETENTION_DAYS (the newest attempt, which says whether one is due, and the
 * newest good one are kept). Workspace rows, removed ones included, are never deleted, and neither is a pending or
 * running operation. (Events are not stored here: they travel through LISTEN/NOTIFY.)
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

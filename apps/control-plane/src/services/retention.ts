import { pruneReconcileRuns } from "@molecule/service-kit/reconcile-runs";
import { finishedOperations, pruneBackupRecords, RetentionSweeper } from "@molecule/service-kit/retention";
import type { OperationsTable } from "@molecule/service-kit/runner";
import { lt } from "drizzle-orm";
import {
  cpBootEvents,
  cpOperations,
  cpReconcileRuns,
  cpRequestNonces,
  cpTenantBackups,
} from "../db/schema.ts";
import type { ControlPlaneDeps } from "./deps.ts";

/** The control plane's retention lock key (its migrations take 74_201_312). */
export const CP_RETENTION_LOCK = 74_201_343;

export interface CpRetentionSettings {
  /** OPERATION_RETENTION_DAYS: finished operations older than this are deleted. */
  operationsMs: number;
  /** EVENT_RETENTION_DAYS: tenant boot events older than this are deleted. */
  eventsMs: number;
  /** BACKUP_RECORD_RETENTION_DAYS: tenants' backup reports older than this are deleted (per org, the newest stay). */
  backupRecordsMs: number;
  sweepIntervalMs: number;
}

/**
 * Prunes finished operations and reconcile passes (the newest pass is kept) past OPERATION_RETENTION_DAYS, tenant
 * boot events past theirs, tenants' backup reports past BACKUP_RECORD_RETENTION_DAYS (per org the newest report and
 * the newest good one stay: GET /cp/admin/backups reads them), and request nonces past their replay window (the
 * signature check also prunes those it passes, but only while requests arrive). Orgs are never deleted:
 * a deleted org keeps its row (`deleted`) as a tombstone for audit; workspace rows are never deleted either, nor a
 * pending or running operation.
 */
export function createCpRetention(deps: ControlPlaneDeps, settings: CpRetentionSettings): RetentionSweeper {
  const { db } = deps;
  return new RetentionSweeper(
    {
      lock: deps.advisoryLock,
      lockKey: CP_RETENTION_LOCK,
      clock: deps.clock,
      logger: deps.logger,
      intervalMs: settings.sweepIntervalMs,
    },
    [
      finishedOperations(db, cpOperations as unknown as OperationsTable, settings.operationsMs),
      pruneReconcileRuns(db, cpReconcileRuns, settings.operationsMs),
      pruneBackupRecords(
        db,
        {
          table: cpTenantBackups,
          id: cpTenantBackups.id,
          status: cpTenantBackups.outcome,
          startedAt: cpTenantBackups.startedAt,
          finishedAt: cpTenantBackups.finishedAt,
          partition: cpTenantBackups.orgId,
        },
        settings.backupRecordsMs,
      ),
      {
        name: "nonces",
        prune: async (now) =>
          (
            await db
              .delete(cpRequestNonces)
              .where(lt(cpRequestNonces.expiresAt, now))
              .returning({ nonce: cpRequestNonces.nonce })
          ).length,
      },
      {
        name: "bootEvents",
        prune: async (now) =>
          (
            await db
              .delete(cpBootEvents)
              .where(lt(cpBootEvents.at, new Date(now.getTime() - settings.eventsMs)))
              .returning({ id: cpBootEvents.id })
          ).length,
      },
    ],
  );
}

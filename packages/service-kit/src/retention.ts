import { and, desc, eq, inArray, lt, notInArray, type SQL, sql } from "drizzle-orm";
import type { AnyPgColumn, PgDatabase, PgQueryResultHKT, PgTable } from "drizzle-orm/pg-core";
import type { Logger } from "pino";
import type { OperationsTable } from "./runner.ts";

// biome-ignore lint/suspicious/noExplicitAny: both apps' schemas are accepted.
type AnyDb = PgDatabase<PgQueryResultHKT, any>;

/** One kind of old row a service prunes: `prune` deletes what is older than its retention at `now`, and says how many. */
export interface RetentionTarget {
  name: string;
  prune: (now: Date) => Promise<number>;
}

export interface RetentionDeps {
  /** `withAdvisoryLock` of the service's database: one replica prunes at a time. */
  lock: <T>(key: number, fn: () => Promise<T>) => Promise<{ acquired: true; value: T } | { acquired: false }>;
  /** The advisory lock key, one per service (two services may share a database server). */
  lockKey: number;
  clock: { now(): Date };
  logger: Logger;
  intervalMs: number;
}

/**
 * Deletes finished operations of a runner table (`succeeded` or `failed`) that finished before `now - retentionMs`.
 * A pending or running operation is never deleted, however old.
 */
export function finishedOperations(
  db: AnyDb,
  table: OperationsTable,
  retentionMs: number,
  name = "operations",
): RetentionTarget {
  return {
    name,
    prune: async (now) => {
      const cutoff = new Date(now.getTime() - retentionMs);
      const deleted = await db
        .delete(table)
        .where(
          and(
            inArray(table.status, ["succeeded", "failed"]),
            sql`coalesce(${table.finishedAt}, ${table.updatedAt}) < ${cutoff.toISOString()}::timestamptz`,
          ),
        )
        .returning({ id: table.id });
      return deleted.length;
    },
  };
}

/**
 * A table of backup records, one row per attempt: `status` is `succeeded` for a good one (`running`, `failed`, …
 * otherwise), `finishedAt` is null while it runs, `startedAt` orders the attempts, and `partition` (the org, for
 * the control plane's table of every tenant's reports) groups them when the table holds more than one subject's.
 */
export interface BackupRecords {
  table: PgTable;
  id: AnyPgColumn;
  status: AnyPgColumn;
  startedAt: AnyPgColumn;
  finishedAt: AnyPgColumn;
  partition?: AnyPgColumn;
}

/**
 * Deletes backup records that finished before `now - retentionMs`, except, per partition, the newest attempt and the
 * newest succeeded one: what "is a backup due" and "when was the last good one" read, however old. A running
 * attempt is never deleted. The backups themselves (objects in the bucket) are not touched.
 */
export function pruneBackupRecords(db: AnyDb, records: BackupRecords, retentionMs: number): RetentionTarget {
  const newest = async (where: SQL | undefined): Promise<unknown[]> => {
    const order = [desc(records.startedAt), desc(records.id)];
    const rows = records.partition
      ? await db
          .selectDistinctOn([records.partition], { id: records.id })
          .from(records.table)
          .where(where)
          .orderBy(records.partition, ...order)
      : await db
          .select({ id: records.id })
          .from(records.table)
          .where(where)
          .orderBy(...order)
          .limit(1);
    return rows.map((row) => row.id);
  };
  return {
    name: "backupRecords",
    prune: async (now) => {
      const cutoff = new Date(now.getTime() - retentionMs);
      const keep = [...(await newest(undefined)), ...(await newest(eq(records.status, "succeeded")))];
      const deleted = await db
        .delete(records.table)
        .where(
          and(
            lt(records.finishedAt, sql`${cutoff.toISOString()}::timestamptz`),
            keep.length > 0 ? notInArray(records.id, keep) : undefined,
          ),
        )
        .returning({ id: records.id });
      return deleted.length;
    },
  };
}

/**
 * Prunes old rows on a timer, once across replicas: each pass runs under a PostgreSQL advisory lock, and a replica
 * that finds it taken skips its pass. What each target keeps (tombstones, live rows) is the target's rule.
 */
export class RetentionSweeper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;

  constructor(
    private readonly deps: RetentionDeps,
    private readonly targets: readonly RetentionTarget[],
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.sweep()
        .catch((error: unknown) => this.deps.logger.error({ err: error }, "retention sweep failed"))
        .finally(() => {
          this.running = null;
        });
    }, this.deps.intervalMs);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One pass now: rows deleted per target, or null when another replica holds the lock. */
  async sweep(): Promise<Record<string, number> | null> {
    const outcome = await this.deps.lock(this.deps.lockKey, async () => {
      const now = this.deps.clock.now();
      const deleted: Record<string, number> = {};
      for (const target of this.targets) deleted[target.name] = await target.prune(now);
      return deleted;
    });
    if (!outcome.acquired) return null;
    if (Object.values(outcome.value).some((count) => count > 0)) {
      this.deps.logger.info({ deleted: outcome.value }, "retention: pruned old rows");
    }
    return outcome.value;
  }
}

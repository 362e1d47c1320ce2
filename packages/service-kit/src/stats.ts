import type { AdminStats, ReconcileReport } from "@molecule/contracts";
import { asc, count, eq } from "drizzle-orm";
import type { AnyPgColumn, PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { countHungOperations, type OperationsTable } from "./runner.ts";

type AnyDb = PgDatabase<PgQueryResultHKT, Record<string, unknown>>;

/** Rows of an operations table by kind and status (one grouped query): the stats and the metrics read it. */
export async function countOperations(
  db: AnyDb,
  table: OperationsTable & { kind: AnyPgColumn },
): Promise<Array<{ kind: string; status: string; count: number }>> {
  const rows = await db
    .select({ kind: table.kind, status: table.status, n: count() })
    .from(table)
    .groupBy(table.kind, table.status);
  return rows.map((row) => ({ kind: String(row.kind), status: String(row.status), count: Number(row.n) }));
}

/**
 * The operations part of the admin stats, for any operations table the shared runner drives: rows by kind and
 * status, the oldest running one, and how many had an attempt abandoned as hung (the runner's deadline).
 */
export async function operationStats(
  db: AnyDb,
  table: OperationsTable & { kind: AnyPgColumn },
  now: Date,
): Promise<Pick<AdminStats, "operations" | "oldestRunning" | "hung">> {
  const operations: AdminStats["operations"] = {};
  for (const row of await countOperations(db, table)) {
    const byStatus = operations[row.kind] ?? {};
    byStatus[row.status] = row.count;
    operations[row.kind] = byStatus;
  }
  const [oldest] = await db
    .select({ id: table.id, kind: table.kind, updatedAt: table.updatedAt, createdAt: table.createdAt })
    .from(table)
    .where(eq(table.status, "running"))
    .orderBy(asc(table.createdAt))
    .limit(1);
  const hung = await countHungOperations(db, table);
  const startedAt = oldest ? new Date(oldest.createdAt as Date) : null;
  return {
    operations,
    oldestRunning:
      oldest && startedAt
        ? {
            id: String(oldest.id),
            kind: String(oldest.kind),
            startedAt: startedAt.toISOString(),
            ageMs: Math.max(0, now.getTime() - startedAt.getTime()),
          }
        : null,
    hung,
  };
}

/** The stats' reconcile part, from the last pass any replica recorded (null before the first). */
export function reconcileStats(
  report: ReconcileReport | null,
): Pick<AdminStats, "orphans" | "ghosts" | "orphanList" | "ghostList" | "resources" | "lastReconcile"> {
  if (!report) {
    return {
      orphans: 0,
      ghosts: 0,
      orphanList: [],
      ghostList: [],
      resources: { byBackend: {}, byOrg: {} },
      lastReconcile: null,
    };
  }
  const { orphanList, ghostList, resources, ...last } = report;
  return {
    orphans: report.orphans,
    ghosts: report.ghosts,
    orphanList,
    ghostList,
    resources,
    lastReconcile: last,
  };
}

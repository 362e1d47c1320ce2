import type { AdminStats, ReconcileReport } from "@molecule/contracts";
import { and, asc, count, eq, lt, sql } from "drizzle-orm";
import type { AnyPgColumn, PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import type { OperationsTable } from "./runner.ts";

type AnyDb = PgDatabase<PgQueryResultHKT, Record<string, unknown>>;

/**
 * The operations part of the admin stats, for any operations table the shared runner drives: rows by kind and
 * status, the oldest running one, and how many running rows nobody renews (lease run out: hung).
 */
export async function operationStats(
  db: AnyDb,
  table: OperationsTable & { kind: AnyPgColumn },
  now: Date,
): Promise<Pick<AdminStats, "operations" | "oldestRunning" | "hung">> {
  const rows = await db
    .select({ kind: table.kind, status: table.status, n: count() })
    .from(table)
    .groupBy(table.kind, table.status);
  const operations: AdminStats["operations"] = {};
  for (const row of rows) {
    const byStatus = operations[String(row.kind)] ?? {};
    byStatus[String(row.status)] = Number(row.n);
    operations[String(row.kind)] = byStatus;
  }
  const [oldest] = await db
    .select({ id: table.id, kind: table.kind, updatedAt: table.updatedAt, createdAt: table.createdAt })
    .from(table)
    .where(eq(table.status, "running"))
    .orderBy(asc(table.createdAt))
    .limit(1);
  const [hung] = await db
    .select({ n: count() })
    .from(table)
    .where(and(eq(table.status, "running"), lt(table.lockedUntil, sql`${now.toISOString()}::timestamptz`)));
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
    hung: Number(hung?.n ?? 0),
  };
}

/** The stats' reconcile part, from the last pass this process ran (null before the first). */
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

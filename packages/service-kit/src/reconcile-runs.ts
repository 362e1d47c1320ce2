/**
 * What the reconciler keeps in the service's database, so that every replica reads the same and a restart forgets
 * nothing: one row per pass (when, how long, which process, what it found and deleted, its whole report), and the
 * first sighting of each resource that is still unclaimed (the ORPHAN_GRACE clock). Both services have the two
 * tables under their own names with these columns.
 */
import type { ReconcileReport } from "@molecule/contracts";
import { and, desc, lt, ne, sql } from "drizzle-orm";
import type { AnyPgColumn, PgDatabase, PgQueryResultHKT, PgTable } from "drizzle-orm/pg-core";
import type { RetentionTarget } from "./retention.ts";

type RunColumn =
  | "id"
  | "replica"
  | "startedAt"
  | "finishedAt"
  | "durationMs"
  | "orphans"
  | "ghosts"
  | "deleted"
  | "report";
type SightingColumn = "backend" | "kind" | "providerId" | "firstSeenAt" | "lastSeenAt";

/** A drizzle table of reconcile passes: these columns under these property names. */
export type ReconcileRunsTable = PgTable & Record<RunColumn, AnyPgColumn>;
/** A drizzle table of unclaimed resources' first sightings, keyed by (backend, kind, providerId). */
export type OrphanSightingsTable = PgTable & Record<SightingColumn, AnyPgColumn>;

// biome-ignore lint/suspicious/noExplicitAny: both apps' schemas are accepted.
type AnyDb = PgDatabase<PgQueryResultHKT, any>;

/** A resource first seen unclaimed at `firstSeenAt`. */
export interface OrphanSighting {
  backend: string;
  kind: string;
  providerId: string;
  firstSeenAt: Date;
}

/** The reconciler's port to its tables. */
export interface ReconcileStore {
  /** Every resource the last passes saw unclaimed (and did not delete), with when it was first seen so. */
  sightings(): Promise<OrphanSighting[]>;
  /** Replaces the sightings with `current` (one pass's, under the reconcile lock), seen at `now`. */
  saveSightings(current: readonly OrphanSighting[], now: Date): Promise<void>;
  /** Records a finished pass (`report.replica` ran it; `id` names the row). */
  recordRun(id: string, report: ReconcileReport, finishedAt: Date): Promise<void>;
  /** The newest pass any replica recorded, or null before the first. */
  lastRun(): Promise<ReconcileReport | null>;
}

export function tableReconcileStore(
  db: AnyDb,
  tables: { runs: ReconcileRunsTable; sightings: OrphanSightingsTable },
): ReconcileStore {
  const { runs, sightings } = tables;
  return {
    async sightings() {
      const rows = await db
        .select({
          backend: sightings.backend,
          kind: sightings.kind,
          providerId: sightings.providerId,
          firstSeenAt: sightings.firstSeenAt,
        })
        .from(sightings);
      return rows.map((row) => ({
        backend: String(row.backend),
        kind: String(row.kind),
        providerId: String(row.providerId),
        firstSeenAt: new Date(row.firstSeenAt as Date),
      }));
    },
    async saveSightings(current, now) {
      await db.transaction(async (tx) => {
        await tx.delete(sightings);
        if (current.length === 0) return;
        await tx.insert(sightings).values(
          current.map((sighting) => ({
            backend: sighting.backend,
            kind: sighting.kind,
            providerId: sighting.providerId,
            firstSeenAt: sighting.firstSeenAt,
            lastSeenAt: now,
          })) as never,
        );
      });
    },
    async recordRun(id, report, finishedAt) {
      await db.insert(runs).values({
        id,
        replica: report.replica,
        startedAt: new Date(report.at),
        finishedAt,
        durationMs: report.durationMs,
        orphans: report.orphans,
        ghosts: report.ghosts,
        deleted: report.deleted,
        report,
      } as never);
    },
    async lastRun() {
      const [row] = await db
        .select({ report: runs.report })
        .from(runs)
        .orderBy(desc(runs.startedAt), desc(runs.id))
        .limit(1);
      return row ? (row.report as ReconcileReport) : null;
    },
  };
}

/**
 * Retention of reconcile passes: rows of passes that finished before `now - retentionMs` are deleted, except the
 * newest pass, which the stats show however old it is.
 */
export function pruneReconcileRuns(
  db: AnyDb,
  runs: ReconcileRunsTable,
  retentionMs: number,
): RetentionTarget {
  return {
    name: "reconcileRuns",
    prune: async (now) => {
      const cutoff = new Date(now.getTime() - retentionMs);
      const [newest] = await db
        .select({ id: runs.id })
        .from(runs)
        .orderBy(desc(runs.startedAt), desc(runs.id))
        .limit(1);
      if (!newest) return 0;
      const deleted = await db
        .delete(runs)
        .where(and(lt(runs.finishedAt, sql`${cutoff.toISOString()}::timestamptz`), ne(runs.id, newest.id)))
        .returning({ id: runs.id });
      return deleted.length;
    },
  };
}

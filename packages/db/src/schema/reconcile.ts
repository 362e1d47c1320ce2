import { index, integer, jsonb, pgTable, primaryKey, text, timestamp } from "drizzle-orm/pg-core";

/** One reconcile pass, whichever replica ran it: what the admin stats show as the last reconcile. */
export const reconcileRuns = pgTable(
  "reconcile_runs",
  {
    id: text("id").primaryKey(),
    /** The process that ran it (host and process id). */
    replica: text("replica").notNull(),
    startedAt: timestamp("started_at", { withTimezone: true }).notNull(),
    finishedAt: timestamp("finished_at", { withTimezone: true }).notNull(),
    durationMs: integer("duration_ms").notNull(),
    orphans: integer("orphans").notNull(),
    ghosts: integer("ghosts").notNull(),
    deleted: integer("deleted").notNull(),
    /** The whole report (contracts' ReconcileReport): orphans and ghosts with their ids, resources by backend. */
    report: jsonb("report").notNull(),
  },
  (table) => [index("reconcile_runs_started_idx").on(table.startedAt)],
);

/**
 * Each resource the reconciler found unclaimed, with when it first did (ORPHAN_GRACE counts from then); the row goes
 * once the resource is claimed, deleted or gone.
 */
export const orphanSightings = pgTable(
  "orphan_sightings",
  {
    backend: text("backend").notNull(),
    kind: text("kind").notNull(),
    providerId: text("provider_id").notNull(),
    firstSeenAt: timestamp("first_seen_at", { withTimezone: true }).notNull(),
    lastSeenAt: timestamp("last_seen_at", { withTimezone: true }).notNull(),
  },
  (table) => [primaryKey({ columns: [table.backend, table.kind, table.providerId] })],
);

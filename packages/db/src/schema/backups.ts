import { sql } from "drizzle-orm";
import { bigint, bigserial, check, index, pgTable, text, timestamp } from "drizzle-orm/pg-core";

/**
 * The tenant's own record of its database backups: one row per attempt, `running` while it dumps and uploads, then
 * `succeeded` or `failed`. The row of the latest attempt is what tells every replica whether a backup is due, so
 * one replica backs up per interval; `reported_at` says the control plane has the report.
 */
export const backupRuns = pgTable(
  "backup_runs",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    status: text("status").notNull(),
    /** `s3://bucket/prefix/<slug>/<timestamp>.<ext>` */
    location: text("location").notNull(),
    format: text("format").notNull(),
    sizeBytes: bigint("size_bytes", { mode: "number" }),
    sha256: text("sha256"),
    error: text("error"),
    startedAt: timestamp("started_at", { withTimezone: true }).notNull(),
    finishedAt: timestamp("finished_at", { withTimezone: true }),
    reportedAt: timestamp("reported_at", { withTimezone: true }),
  },
  (table) => [
    index("backup_runs_started_idx").on(table.startedAt),
    check("backup_runs_status_check", sql`${table.status} IN ('running', 'succeeded', 'failed')`),
  ],
);

export type BackupRunRow = typeof backupRuns.$inferSelect;

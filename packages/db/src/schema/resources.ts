import { sql } from "drizzle-orm";
import { check, index, pgTable, primaryKey, text, timestamp } from "drizzle-orm/pg-core";

/**
 * The resource audit: a row per resource a backend is about to create for a workspace (`intent`), completed with the
 * provider's id once it exists (`claimed`), `released` once the workspace's destroy succeeded. The reconciler reads
 * open rows as claims and resolves intents a crash left behind by listing.
 */
export const workspaceResources = pgTable(
  "workspace_resources",
  {
    subjectId: text("workspace_id").notNull(),
    orgId: text("org_id").notNull(),
    backend: text("backend").notNull(),
    /** The kind `listManaged` reports: container, volume, fly_machine, fly_volume, workspace (controlplane). */
    kind: text("kind").notNull(),
    name: text("name").notNull(),
    providerId: text("provider_id"),
    state: text("state").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
    releasedAt: timestamp("released_at", { withTimezone: true }),
  },
  (table) => [
    primaryKey({ columns: [table.subjectId, table.kind, table.name] }),
    index("workspace_resources_open_idx").on(table.backend, table.state),
    check("workspace_resources_state_check", sql`${table.state} IN ('intent', 'claimed', 'released')`),
  ],
);

import { WORKSPACE_STATUSES } from "@molecule/contracts";
import { boolean, index, integer, jsonb, pgEnum, pgTable, text, timestamp } from "drizzle-orm/pg-core";

export const workspaceStatus = pgEnum("workspace_status", WORKSPACE_STATUSES);

export const workspaces = pgTable(
  "workspaces",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    name: text("name").notNull(),
    runtime: text("runtime").notNull(),
    tier: integer("tier").notNull(),
    backend: text("backend").notNull(),
    status: workspaceStatus("status").notNull(),
    statusReason: text("status_reason"),
    needsRestart: boolean("needs_restart").notNull().default(false),
    url: text("url"),
    agentCard: jsonb("agent_card").$type<Record<string, unknown>>(),
    metadata: jsonb("metadata").$type<Record<string, unknown>>().notNull().default({}),
    /** The backend's handle (ids of what it created), written as soon as each resource exists. */
    handle: jsonb("handle").$type<({ backend: string } & Record<string, unknown>) | null>(),
    /**
     * The agent's inbound token (what the A2A proxy presents to it), sealed like a secret with the key version beside
     * it; null until the agent registers, and for agents registered before inbound tokens existed.
     */
    inboundTokenSealed: text("inbound_token_sealed"),
    inboundTokenKeyVersion: integer("inbound_token_key_version"),
    lastHeartbeatAt: timestamp("last_heartbeat_at", { withTimezone: true }),
    /** Seconds idle before it is suspended: 0 never, null the platform's IDLE_SUSPEND_AFTER. */
    idleSuspendSeconds: integer("idle_suspend_seconds"),
    /** The last A2A message to or from it, or activity its agent reported; bookkeeping like last_heartbeat_at. */
    lastActivityAt: timestamp("last_activity_at", { withTimezone: true }),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [index("workspaces_org_status_idx").on(table.orgId, table.status)],
);

export type WorkspaceRow = typeof workspaces.$inferSelect;
export type NewWorkspaceRow = typeof workspaces.$inferInsert;

import { index, integer, pgEnum, pgTable, primaryKey, text, timestamp } from "drizzle-orm/pg-core";
import { workspaces } from "./workspaces.ts";

export const tokenKind = pgEnum("token_kind", ["boot", "auth"]);

/** Only SHA-256 hashes of tokens are stored. */
export const workspaceTokens = pgTable(
  "workspace_tokens",
  {
    tokenHash: text("token_hash").primaryKey(),
    workspaceId: text("workspace_id")
      .notNull()
      .references(() => workspaces.id),
    kind: tokenKind("kind").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    spentAt: timestamp("spent_at", { withTimezone: true }),
  },
  (table) => [index("workspace_tokens_workspace_idx").on(table.workspaceId)],
);

/** AES-256-GCM sealed values; `keyVersion` names the key so keys can rotate. */
export const workspaceSecrets = pgTable(
  "workspace_secrets",
  {
    workspaceId: text("workspace_id")
      .notNull()
      .references(() => workspaces.id),
    key: text("key").notNull(),
    sealed: text("sealed").notNull(),
    keyVersion: integer("key_version").notNull(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [primaryKey({ columns: [table.workspaceId, table.key] })],
);

export type WorkspaceTokenRow = typeof workspaceTokens.$inferSelect;
export type WorkspaceSecretRow = typeof workspaceSecrets.$inferSelect;

import { OPERATION_KINDS, OPERATION_STATUSES } from "@molecule/contracts";
import { index, integer, jsonb, pgEnum, pgTable, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";
import { workspaces } from "./workspaces.ts";

export const operationKind = pgEnum("operation_kind", OPERATION_KINDS);
export const operationStatus = pgEnum("operation_status", OPERATION_STATUSES);

export interface OperationStep {
  name: string;
  startedAt: string;
  durationMs: number;
  detail?: string;
}

export const operations = pgTable(
  "operations",
  {
    id: text("id").primaryKey(),
    workspaceId: text("workspace_id")
      .notNull()
      .references(() => workspaces.id),
    kind: operationKind("kind").notNull(),
    status: operationStatus("status").notNull().default("pending"),
    attempts: integer("attempts").notNull().default(0),
    steps: jsonb("steps").$type<OperationStep[]>().notNull().default([]),
    error: jsonb("error").$type<{ code: string; message: string } | null>(),
    idempotencyKey: text("idempotency_key"),
    requestHash: text("request_hash"),
    /** Inputs that must survive a crash but are secret (the boot token), sealed with the secrets key. */
    sealedInput: text("sealed_input"),
    /** The key version that sealed `sealedInput`; null on rows written before it was recorded. */
    sealedKeyVersion: integer("sealed_key_version"),
    lockedBy: text("locked_by"),
    lockedUntil: timestamp("locked_until", { withTimezone: true }),
    runAfter: timestamp("run_after", { withTimezone: true }).notNull().defaultNow(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
    finishedAt: timestamp("finished_at", { withTimezone: true }),
  },
  (table) => [
    uniqueIndex("operations_idempotency_key_idx").on(table.idempotencyKey),
    index("operations_claim_idx").on(table.status, table.runAfter),
    index("operations_workspace_idx").on(table.workspaceId, table.createdAt),
  ],
);

export type OperationRow = typeof operations.$inferSelect;

import { fileURLToPath } from "node:url";
import type { MigrationSet } from "@molecule/db";

/** The control plane's migrations, run at start-up through packages/db's migrator under their own lock. */
export const CP_MIGRATIONS: MigrationSet = {
  dir: fileURLToPath(new URL("../../drizzle/", import.meta.url)),
  lockKey: 74_201_312,
  table: "cp_schema_migrations",
};

/** Where control-plane replicas share their events (GET /cp/admin/events); migration 0008 makes the sequence. */
export const CP_EVENT_SHARING = { channel: "cp_events", sequence: "cp_event_ids" } as const;

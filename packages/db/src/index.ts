export {
  type AdvisoryLock,
  createDatabase,
  type Database,
  type DatabaseOptions,
  type Db,
  type DumpOptions,
  type LockOutcome,
  type Schema,
} from "./client.ts";
export {
  type DatabaseDump,
  DumpError,
  type DumpFormat,
  findExecutable,
  type PgDumpFormat,
  restorePglite,
  restorePostgres,
} from "./dump.ts";
export { listMigrations, type MigrationSet, PLATFORM_MIGRATIONS } from "./migrate.ts";
export {
  type Listen,
  MAX_NOTIFY_PAYLOAD_BYTES,
  type Notify,
  type NotifyHandler,
} from "./notifications.ts";
export * from "./schema/index.ts";

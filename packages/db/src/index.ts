export {
  type AdvisoryLock,
  createDatabase,
  type Database,
  type DatabaseOptions,
  type Db,
  type LockOutcome,
  type Schema,
} from "./client.ts";
export { listMigrations, type MigrationSet, PLATFORM_MIGRATIONS } from "./migrate.ts";
export * from "./schema/index.ts";

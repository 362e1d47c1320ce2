import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export interface SqlSession {
  exec(text: string): Promise<void>;
  query(text: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
}

export interface MigrationRunner {
  /** Runs `fn` on one connection, so a session-level advisory lock holds for all of it. */
  withSession<T>(fn: (session: SqlSession) => Promise<T>): Promise<T>;
}

const MIGRATIONS_DIR = fileURLToPath(new URL("../drizzle/", import.meta.url));
/** Arbitrary constant: every process migrating the same database takes the same lock. */
const MIGRATION_LOCK_KEY = 74_201_311;

export function listMigrations(): { name: string; sql: string }[] {
  return readdirSync(MIGRATIONS_DIR)
    .filter((file) => file.endsWith(".sql"))
    .sort()
    .map((file) => ({ name: file, sql: readFileSync(`${MIGRATIONS_DIR}${file}`, "utf8") }));
}

/** Applies pending migrations in order, each in its own transaction, under an advisory lock. */
export async function runMigrations(runner: MigrationRunner): Promise<void> {
  await runner.withSession(async (session) => {
    await session.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
    try {
      await session.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
      );
      const applied = new Set(
        (await session.query("SELECT name FROM schema_migrations")).map((row) => String(row.name)),
      );
      for (const migration of listMigrations()) {
        if (applied.has(migration.name)) continue;
        await session.exec(
          `BEGIN;\n${migration.sql}\nINSERT INTO schema_migrations (name) VALUES ('${migration.name.replaceAll("'", "''")}');\nCOMMIT;`,
        );
      }
    } catch (error) {
      await session.exec("ROLLBACK").catch(() => {});
      throw error;
    } finally {
      await session.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]);
    }
  });
}

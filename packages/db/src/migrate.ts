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

/**
 * A folder of hand-written SQL migrations, the advisory lock every process migrating it takes, and the table that
 * records which ran. Another service's database (the control plane's) passes its own.
 */
export interface MigrationSet {
  /** Absolute folder path ending in a slash; `*.sql` files run in name order. */
  dir: string;
  lockKey: number;
  /** A plain SQL identifier. */
  table: string;
}

/** This package's migrations. The lock key is an arbitrary constant shared by every process. */
export const PLATFORM_MIGRATIONS: MigrationSet = {
  dir: fileURLToPath(new URL("../drizzle/", import.meta.url)),
  lockKey: 74_201_311,
  table: "schema_migrations",
};

export function listMigrations(set: MigrationSet = PLATFORM_MIGRATIONS): { name: string; sql: string }[] {
  return readdirSync(set.dir)
    .filter((file) => file.endsWith(".sql"))
    .sort()
    .map((file) => ({ name: file, sql: readFileSync(`${set.dir}${file}`, "utf8") }));
}

/** Applies pending migrations in order, each in its own transaction, under an advisory lock. */
export async function runMigrations(
  runner: MigrationRunner,
  set: MigrationSet = PLATFORM_MIGRATIONS,
): Promise<void> {
  if (!/^[a-z_][a-z0-9_]*$/.test(set.table)) throw new Error(`bad migrations table name: ${set.table}`);
  await runner.withSession(async (session) => {
    await session.query("SELECT pg_advisory_lock($1)", [set.lockKey]);
    try {
      await session.exec(
        `CREATE TABLE IF NOT EXISTS ${set.table} (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      const applied = new Set(
        (await session.query(`SELECT name FROM ${set.table}`)).map((row) => String(row.name)),
      );
      for (const migration of listMigrations(set)) {
        if (applied.has(migration.name)) continue;
        await session.exec(
          `BEGIN;\n${migration.sql}\nINSERT INTO ${set.table} (name) VALUES ('${migration.name.replaceAll("'", "''")}');\nCOMMIT;`,
        );
      }
    } catch (error) {
      await session.exec("ROLLBACK").catch(() => {});
      throw error;
    } finally {
      await session.query("SELECT pg_advisory_unlock($1)", [set.lockKey]);
    }
  });
}

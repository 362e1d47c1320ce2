import { mkdirSync } from "node:fs";
import { PGlite } from "@electric-sql/pglite";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { drizzle as drizzlePostgres } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import { type MigrationRunner, type MigrationSet, PLATFORM_MIGRATIONS, runMigrations } from "./migrate.ts";
import * as schema from "./schema/index.ts";

export type Schema = typeof schema;
/** One type for both drivers: code above this package never knows which one it runs on. */
export type Db = PgDatabase<PgQueryResultHKT, Schema>;

export interface Database {
  db: Db;
  driver: "pglite" | "postgres";
  migrate(): Promise<void>;
  close(): Promise<void>;
}

export type DatabaseOptions = { url: string; maxConnections?: number } | { dataDir: string };

/**
 * PostgreSQL with `url`, else embedded PGlite in `dataDir` (use "memory://" for a throwaway one). `migrations`
 * defaults to this package's; another service's schema passes its own set (its tables are queried with the query
 * builder, which works on any table whatever schema the client was built with).
 */
export async function createDatabase(
  options: DatabaseOptions,
  migrations: MigrationSet = PLATFORM_MIGRATIONS,
): Promise<Database> {
  if ("url" in options) {
    const sql = postgres(options.url, {
      max: options.maxConnections ?? 10,
      onnotice: () => {},
      connection: { application_name: "molecule" },
    });
    const runner: MigrationRunner = {
      async withSession(fn) {
        const reserved = await sql.reserve();
        try {
          return await fn({
            exec: async (text) => void (await reserved.unsafe(text)),
            query: async (text, params) =>
              (await reserved.unsafe(text, params as postgres.ParameterOrJSON<never>[])) as unknown as Record<
                string,
                unknown
              >[],
          });
        } finally {
          reserved.release();
        }
      },
    };
    return {
      db: drizzlePostgres(sql, { schema }) as unknown as Db,
      driver: "postgres",
      migrate: () => runMigrations(runner, migrations),
      close: () => sql.end({ timeout: 5 }),
    };
  }
  if (!options.dataDir.startsWith("memory://")) mkdirSync(options.dataDir, { recursive: true });
  const client = await PGlite.create(options.dataDir);
  const runner: MigrationRunner = {
    withSession: (fn) =>
      fn({
        exec: async (text) => void (await client.exec(text)),
        query: async (text, params) => (await client.query<Record<string, unknown>>(text, params)).rows,
      }),
  };
  return {
    db: drizzlePglite(client, { schema }) as unknown as Db,
    driver: "pglite",
    migrate: () => runMigrations(runner, migrations),
    close: () => client.close(),
  };
}

import { mkdirSync } from "node:fs";
import { PGlite } from "@electric-sql/pglite";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { drizzle as drizzlePostgres } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import { type DatabaseDump, dumpPglite, dumpPostgres, type PgDumpFormat } from "./dump.ts";
import { type MigrationRunner, type MigrationSet, PLATFORM_MIGRATIONS, runMigrations } from "./migrate.ts";
import { type Listen, type Notify, PostgresListener, pgliteListen } from "./notifications.ts";
import * as schema from "./schema/index.ts";

export type Schema = typeof schema;
/** One type for both drivers: code above this package never knows which one it runs on. */
export type Db = PgDatabase<PgQueryResultHKT, Schema>;

/** What `withAdvisoryLock` answers: `acquired: false` when another process (or caller) holds the lock. */
export type LockOutcome<T> = { acquired: true; value: T } | { acquired: false };

/**
 * Runs `fn` while holding the PostgreSQL session advisory lock `key`, or answers `acquired: false` at once when
 * someone else holds it: how a loop that must run once across replicas (the reconciler) elects its leader.
 */
export type AdvisoryLock = <T>(key: number, fn: () => Promise<T>) => Promise<LockOutcome<T>>;

export interface DumpOptions {
  /** PostgreSQL: `custom` (default) or `plain`. The embedded database has one format. */
  pgFormat?: PgDumpFormat;
  /** PostgreSQL: where pg_dump is looked for (the service's PATH). */
  searchPath: string;
}

export interface Database {
  db: Db;
  driver: "pglite" | "postgres";
  migrate(): Promise<void>;
  withAdvisoryLock: AdvisoryLock;
  /** The whole database as one dump stream: `pg_dump` on PostgreSQL, PGlite's data-folder dump when embedded. */
  dump(options: DumpOptions): Promise<DatabaseDump>;
  /**
   * LISTEN on `channel` (see notifications.ts): PostgreSQL over one dedicated connection per process, opened on first
   * use and ended by `close`; the embedded database on its own connection. Resolves once listening.
   */
  listen: Listen;
  /** `pg_notify(channel, payload)`, delivered at commit to every listener, this process's included. */
  notify: Notify;
  close(): Promise<void>;
}

/**
 * The advisory lock over one reserved session: a session lock must be taken and released on the same connection,
 * which a pool does not promise for two statements. A lock held by this process is refused like one held elsewhere
 * (PostgreSQL would let the same session take it twice).
 */
function advisoryLockOver(runner: MigrationRunner): AdvisoryLock {
  const held = new Set<number>();
  return async (key, fn) => {
    if (held.has(key)) return { acquired: false };
    held.add(key);
    try {
      return await runner.withSession(async (session) => {
        const [row] = await session.query("SELECT pg_try_advisory_lock($1) AS acquired", [key]);
        if (row?.acquired !== true) return { acquired: false } as const;
        try {
          return { acquired: true, value: await fn() } as const;
        } finally {
          await session.query("SELECT pg_advisory_unlock($1)", [key]);
        }
      });
    } finally {
      held.delete(key);
    }
  };
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
    let listener: PostgresListener | null = null;
    return {
      db: drizzlePostgres(sql, { schema }) as unknown as Db,
      driver: "postgres",
      migrate: () => runMigrations(runner, migrations),
      withAdvisoryLock: advisoryLockOver(runner),
      dump: async (dump) =>
        dumpPostgres(options.url, { searchPath: dump.searchPath, format: dump.pgFormat ?? "custom" }),
      listen: (channel, onNotify, onConnect, onDisconnect) => {
        listener ??= new PostgresListener(options.url);
        return listener.listen(channel, onNotify, onConnect, onDisconnect);
      },
      notify: async (channel, payload) => void (await sql`SELECT pg_notify(${channel}, ${payload})`),
      close: async () => {
        await Promise.all([sql.end({ timeout: 5 }), listener?.close()]);
      },
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
    // one process owns an embedded database: the lock's statements run on its only connection, between others
    withAdvisoryLock: advisoryLockOver(runner),
    dump: () => dumpPglite(client),
    listen: pgliteListen(client),
    notify: async (channel, payload) =>
      void (await client.query("SELECT pg_notify($1, $2)", [channel, payload])),
    close: () => client.close(),
  };
}

import { createHash, randomBytes } from "node:crypto";
import {
  createDatabase,
  type Database,
  listMigrations,
  type MigrationSet,
  PLATFORM_MIGRATIONS,
} from "@molecule/db";
import postgres from "postgres";

/** The server tests run on: real PostgreSQL, the machine's own by default. */
export const ADMIN_DATABASE_URL =
  process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

function urlFor(database: string): string {
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${database}`;
  return url.toString();
}

/** A migrated template, named after the migrations' content so a schema change makes a new one. */
export function templateName(migrations: MigrationSet = PLATFORM_MIGRATIONS): string {
  const hash = createHash("sha256");
  if (migrations !== PLATFORM_MIGRATIONS) hash.update(migrations.table);
  for (const migration of listMigrations(migrations)) hash.update(migration.name).update(migration.sql);
  return `molecule_tpl_${hash.digest("hex").slice(0, 12)}`;
}

export async function ensureTemplate(migrations: MigrationSet = PLATFORM_MIGRATIONS): Promise<void> {
  const name = templateName(migrations);
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    const existing = await admin`SELECT 1 FROM pg_database WHERE datname = ${name}`;
    if (existing.length > 0) return;
    const building = `${name}_build_${randomBytes(3).toString("hex")}`;
    await admin.unsafe(`CREATE DATABASE ${building}`);
    const database = await createDatabase({ url: urlFor(building), maxConnections: 1 }, migrations);
    await database.migrate();
    await database.close();
    try {
      await admin.unsafe(`ALTER DATABASE ${building} RENAME TO ${name}`);
    } catch {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${building}`); // another run built it first
    }
  } finally {
    await admin.end();
  }
}

async function dropDatabase(name: string, database: Database): Promise<void> {
  await database.close();
  const cleanup = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    await cleanup.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } finally {
    await cleanup.end();
  }
}

export interface TestDatabase extends Database {
  url: string;
  drop(): Promise<void>;
}

/**
 * A fresh, migrated database for one test file: `CREATE DATABASE … TEMPLATE` takes milliseconds. `migrations`
 * picks another service's schema (the control plane's); its template is built on first use.
 */
export async function createTestDatabase(options: { migrations?: MigrationSet } = {}): Promise<TestDatabase> {
  const migrations = options.migrations ?? PLATFORM_MIGRATIONS;
  if (migrations !== PLATFORM_MIGRATIONS) await ensureTemplate(migrations);
  const name = `molecule_t_${randomBytes(6).toString("hex")}`;
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name} TEMPLATE ${templateName(migrations)}`);
  } finally {
    await admin.end();
  }
  const url = urlFor(name);
  const database = await createDatabase({ url, maxConnections: 5 }, migrations);
  return {
    ...database,
    url,
    drop: () => dropDatabase(name, database),
  };
}

/** A new, empty database (no tables, not migrated): where a dump is restored. */
export async function createEmptyTestDatabase(): Promise<TestDatabase> {
  const name = `molecule_t_${randomBytes(6).toString("hex")}`;
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name} TEMPLATE template0`);
  } finally {
    await admin.end();
  }
  const url = urlFor(name);
  const database = await createDatabase({ url, maxConnections: 5 });
  return {
    ...database,
    url,
    drop: () => dropDatabase(name, database),
  };
}

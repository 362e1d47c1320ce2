import { randomBytes } from "node:crypto";
import type { MigrationSet } from "@molecule/db";
import { generateDrizzleJson, generateMigration } from "drizzle-kit/api";
import postgres from "postgres";
import { ADMIN_DATABASE_URL, createTestDatabase } from "./pg.ts";

/**
 * What PostgreSQL itself reports about a schema, normalised by the server (types through `format_type`, defaults
 * through `pg_get_expr`, indexes and constraints through `pg_get_*def`), so two databases built by differently
 * written SQL compare equal exactly when they hold the same tables, columns, enums, indexes and constraints.
 * Functions and triggers are not compared: drizzle's schema cannot express them (the change-notification triggers
 * exist only in the hand-written SQL), so their own tests check what they do (packages/db notifications.test.ts,
 * the control plane's db/notifications.test.ts).
 */
export interface Catalog {
  enums: Record<string, string[]>;
  columns: Record<string, string>;
  indexes: Record<string, string>;
  constraints: Record<string, string>;
}

async function readCatalog(url: string, ignoreTables: string[]): Promise<Catalog> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const enums = await sql<{ name: string; labels: string[] }[]>`
      SELECT t.typname AS name, array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels
      FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname = 'public' GROUP BY t.typname`;
    const columns = await sql<
      { table: string; column: string; type: string; notnull: boolean; def: string | null }[]
    >`
      SELECT c.relname AS table, a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type,
             a.attnotnull AS notnull, pg_get_expr(d.adbin, d.adrelid) AS def
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped`;
    // Constraint-backed indexes (primary keys, unique constraints) are compared through their constraint, whose name
    // is the generator's choice; a plain index is compared by name and definition, the name being part of the schema.
    const indexes = await sql<{ table: string; name: string; def: string }[]>`
      SELECT c.relname AS table, i.relname AS name, pg_get_indexdef(i.oid) AS def
      FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)`;
    const constraints = await sql<{ table: string; def: string }[]>`
      SELECT c.relname AS table, pg_get_constraintdef(k.oid) AS def
      FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public'`;
    const keep = (table: string) => !ignoreTables.includes(table);
    return {
      enums: Object.fromEntries(enums.map((row) => [row.name, row.labels])),
      columns: Object.fromEntries(
        columns
          .filter((row) => keep(row.table))
          .map((row) => [
            `${row.table}.${row.column}`,
            `${row.type}${row.notnull ? " NOT NULL" : ""}${row.def === null ? "" : ` DEFAULT ${row.def}`}`,
          ]),
      ),
      indexes: Object.fromEntries(indexes.filter((row) => keep(row.table)).map((row) => [row.name, row.def])),
      constraints: Object.fromEntries(
        constraints.filter((row) => keep(row.table)).map((row) => [`${row.table}: ${row.def}`, row.def]),
      ),
    };
  } finally {
    await sql.end();
  }
}

/** The SQL drizzle-kit would write for `schema` against an empty database (what `drizzle-kit generate` emits first). */
export async function generatedSql(schema: Record<string, unknown>): Promise<string[]> {
  return generateMigration(generateDrizzleJson({}), generateDrizzleJson(schema));
}

/**
 * The catalog of a database migrated by the hand-written SQL of `migrations`, and of one built from what drizzle-kit
 * generates for `schema`, each on a fresh database; equal when the two sources of truth agree.
 */
export async function compareSchemas(
  schema: Record<string, unknown>,
  migrations: MigrationSet,
): Promise<{ migrated: Catalog; generated: Catalog }> {
  const handWritten = await createTestDatabase({ migrations });
  const name = `molecule_t_${randomBytes(6).toString("hex")}`;
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${name}`;
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
    const target = postgres(url.toString(), { max: 1, onnotice: () => {} });
    try {
      for (const statement of await generatedSql(schema)) await target.unsafe(statement);
    } finally {
      await target.end();
    }
    return {
      migrated: await readCatalog(handWritten.url, [migrations.table]),
      generated: await readCatalog(url.toString(), []),
    };
  } finally {
    await handWritten.drop();
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
}

/**
 * Restores a tenant's database from one of its backups (a file downloaded from TENANT_BACKUP_S3_PREFIX):
 *
 *   pnpm --filter @molecule/tenant-platform restore <file> --database-url <URL of a new, empty database>
 *   pnpm --filter @molecule/tenant-platform restore <file> --data-dir <new, empty embedded data folder>
 *
 * The format follows the file name as the backup named it: `.dump` (pg_dump custom), `.sql` (pg_dump plain),
 * `.tar.gz` (the embedded database). `--sha256 <hex>` (the checksum GET /cp/admin/backups shows) is checked before
 * anything is restored. Exit 0 when restored, 1 on failure, 2 on bad usage.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { type DumpFormat, restorePglite, restorePostgres } from "@molecule/db";

const USAGE =
  "usage: restore <backup file> (--database-url <postgres URL> | --data-dir <folder>) [--sha256 <hex>]";

function formatOf(file: string): DumpFormat | null {
  if (file.endsWith(".dump")) return "pg_dump_custom";
  if (file.endsWith(".sql")) return "pg_dump_plain";
  if (file.endsWith(".tar.gz")) return "pglite_datadir_tgz";
  return null;
}

async function sha256Of(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

class UsageError extends Error {}

async function restore(argv: string[], searchPath: string): Promise<string> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  const [file] = positionals;
  if (!file || positionals.length > 1) throw new UsageError("one backup file is expected");
  const format = formatOf(file);
  if (!format)
    throw new UsageError("the backup file must end in .dump, .sql or .tar.gz (as the backup named it)");
  if (values.sha256 !== undefined && (await sha256Of(file)) !== values.sha256.toLowerCase()) {
    throw new Error(
      `${file} does not match the given sha256: a damaged or different file; nothing was restored`,
    );
  }
  if (format === "pglite_datadir_tgz") {
    if (!values["data-dir"] || values["database-url"]) {
      throw new UsageError("a .tar.gz backup is of the embedded database: give --data-dir (a new folder)");
    }
    await restorePglite(values["data-dir"], new Blob([await readFile(file)]));
    return `restored ${file} into ${values["data-dir"]}`;
  }
  if (!values["database-url"] || values["data-dir"]) {
    throw new UsageError("a PostgreSQL backup needs --database-url (a new, empty database)");
  }
  await restorePostgres(values["database-url"], createReadStream(file), format, { searchPath });
  return `restored ${file} into the database at ${new URL(values["database-url"]).host}`;
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      "database-url": { type: "string" },
      "data-dir": { type: "string" },
      sha256: { type: "string" },
    },
  });
}

restore(process.argv.slice(2), process.env.PATH ?? "").then(
  (done) => console.log(done),
  (error: unknown) => {
    const usage = error instanceof UsageError;
    console.error(`restore: ${(error as Error).message}${usage ? `\n${USAGE}` : ""}`);
    process.exit(usage ? 2 : 1);
  },
);

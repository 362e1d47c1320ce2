/**
 * Whole-database dumps and their restore, for both drivers: PostgreSQL through the PostgreSQL client programs
 * (`pg_dump`, `pg_restore`, `psql`, found on the search path given), the embedded database through PGlite's own
 * data-folder dump (`dumpDataDir`, a gzipped tar) and `loadDataDir`. A dump is a stream read once, so a large one is
 * never held whole by this process (PGlite's is: it makes the tarball in memory).
 */
import { spawn } from "node:child_process";
import { accessSync, constants, existsSync, readdirSync } from "node:fs";
import { delimiter, join } from "node:path";
import { Readable } from "node:stream";
import { PGlite } from "@electric-sql/pglite";

export type DumpFormat = "pg_dump_custom" | "pg_dump_plain" | "pglite_datadir_tgz";

/** What PostgreSQL is dumped as: `custom` (compressed, restored with pg_restore) or `plain` SQL (psql). */
export type PgDumpFormat = "custom" | "plain";

export interface DatabaseDump {
  format: DumpFormat;
  /** The dump's bytes, to be read once. */
  stream: Readable;
  /** Settles once the dump is complete: rejects (with a DumpError) when the dumping program failed. */
  finished: Promise<void>;
  /** Stops the dump early (its reader gave up); `finished` then rejects. */
  cancel(): void;
}

export interface PostgresToolOptions {
  /** Where to look for the PostgreSQL client programs: the PATH of the service's environment. */
  searchPath: string;
}

/** A dump or restore that could not run or failed: one line for an operator, never with a password in it. */
export class DumpError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DumpError";
  }
}

/** The first directory of `searchPath` holding an executable `name`, as the shell would find it, or null. */
export function findExecutable(name: string, searchPath: string): string | null {
  for (const dir of searchPath.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

function requireExecutable(name: string, searchPath: string): string {
  const found = findExecutable(name, searchPath);
  if (!found) {
    throw new DumpError(
      `${name} was not found on PATH: install the PostgreSQL client programs (Debian: postgresql-client), of the server's major version or newer`,
    );
  }
  return found;
}

/**
 * The connection for a client program: the URL without its password, which travels in PGPASSWORD instead, so it is
 * never on a command line another user of the host can read.
 */
function connection(url: string): { dbname: string; password: string } {
  const parsed = new URL(url);
  const password = decodeURIComponent(parsed.password);
  parsed.password = "";
  return { dbname: parsed.toString(), password };
}

/** One short line of a program's error output, with the password taken out. */
function firstLine(stderr: string, password: string): string {
  const line =
    stderr
      .split("\n")
      .map((text) => text.trim())
      .find(Boolean) ?? "no error output";
  return (password ? line.split(password).join("[redacted]") : line).slice(0, 300);
}

interface Run {
  stdout: Readable;
  finished: Promise<void>;
  kill(): void;
}

function run(program: string, args: string[], password: string, searchPath: string, stdin?: Readable): Run {
  const child = spawn(program, args, {
    env: { PATH: searchPath, PGPASSWORD: password, PGCONNECT_TIMEOUT: "15" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => {
    if (stderr.length < 4096) stderr += chunk.toString("utf8");
  });
  child.stdin.on("error", () => {}); // the program's exit status says what went wrong
  if (stdin) stdin.pipe(child.stdin);
  else child.stdin.end();
  const name = program.split("/").at(-1);
  const finished = new Promise<void>((resolve, reject) => {
    child.once("error", (error) => reject(new DumpError(`${name} could not be started: ${error.message}`)));
    child.once("close", (code, signal) => {
      if (code === 0) resolve();
      else
        reject(
          new DumpError(
            `${name} failed (${signal ? `signal ${signal}` : `exit code ${code}`}): ${firstLine(stderr, password)}`,
          ),
        );
    });
  });
  finished.catch(() => {}); // read by the caller; never an unhandled rejection meanwhile
  return { stdout: child.stdout, finished, kill: () => child.kill("SIGTERM") };
}

/** Dumps a PostgreSQL database with `pg_dump` (no owners or grants: a restore goes into any role's database). */
export function dumpPostgres(
  url: string,
  options: PostgresToolOptions & { format?: PgDumpFormat },
): DatabaseDump {
  const pgDump = requireExecutable("pg_dump", options.searchPath);
  const { dbname, password } = connection(url);
  const format = options.format ?? "custom";
  const dumping = run(
    pgDump,
    [`--format=${format}`, "--no-owner", "--no-privileges", `--dbname=${dbname}`],
    password,
    options.searchPath,
  );
  return {
    format: format === "custom" ? "pg_dump_custom" : "pg_dump_plain",
    stream: dumping.stdout,
    finished: dumping.finished,
    cancel: dumping.kill,
  };
}

/** Dumps the embedded database's data folder (a consistent copy PGlite makes between statements). */
export async function dumpPglite(client: PGlite): Promise<DatabaseDump> {
  const tarball = await client.dumpDataDir("gzip");
  const stream = Readable.fromWeb(tarball.stream() as import("node:stream/web").ReadableStream<Uint8Array>);
  return {
    format: "pglite_datadir_tgz",
    stream,
    finished: Promise.resolve(),
    cancel: () => stream.destroy(),
  };
}

/**
 * Restores a `pg_dump` dump into the (empty, or freshly created) database at `url`, in one transaction: it all
 * applies or nothing does.
 */
export async function restorePostgres(
  url: string,
  dump: Readable,
  format: Exclude<DumpFormat, "pglite_datadir_tgz">,
  options: PostgresToolOptions,
): Promise<void> {
  const { dbname, password } = connection(url);
  const restoring =
    format === "pg_dump_custom"
      ? run(
          requireExecutable("pg_restore", options.searchPath),
          ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", `--dbname=${dbname}`],
          password,
          options.searchPath,
          dump,
        )
      : run(
          requireExecutable("psql", options.searchPath),
          ["--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "--single-transaction", `--dbname=${dbname}`],
          password,
          options.searchPath,
          dump,
        );
  restoring.stdout.resume();
  await restoring.finished;
}

/** Makes a new embedded database in `dataDir` (absent or empty) from a `pglite_datadir_tgz` dump. */
export async function restorePglite(dataDir: string, dump: Blob): Promise<void> {
  if (existsSync(dataDir) && readdirSync(dataDir).length > 0) {
    throw new DumpError(`${dataDir} is not empty: restore into a new data folder`);
  }
  const client = await PGlite.create({ dataDir, loadDataDir: dump });
  await client.close();
}

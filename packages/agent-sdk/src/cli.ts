#!/usr/bin/env tsx
/**
 * `molecule-agent`: connects an agent running anywhere (a laptop, a CI runner, on-prem) to a tenant platform as an
 * external workspace. It serves the echo A2A agent, registers with the one-time registration token from the
 * workspace's connection bundle, heartbeats with backoff, and keeps the workspace's bearer token in the state
 * directory so that a restart needs no new token.
 *
 *   WORKSPACE_BOOT_TOKEN=T npx tsx packages/agent-sdk/src/cli.ts run --platform URL --url U [--workspace ID] …
 *
 * The registration token is read from `WORKSPACE_BOOT_TOKEN`, `--token-file` or `--bundle`: a `--token` flag still
 * works but is visible to every user of the machine in the process list, so it earns a warning.
 */
import { readFileSync, realpathSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { CredentialsError } from "./credentials.ts";
import { ECHO_CARD } from "./echo.ts";
import { runEchoProcess } from "./echo-process.ts";
import { DEFAULT_HEARTBEAT_INTERVAL_MS } from "./heartbeat.ts";
import { createJsonLogger, errorFields } from "./log.ts";

export const USAGE = `Usage: molecule-agent run --platform URL --url URL [--workspace ID] [options]

Serves an echo A2A agent here and connects it to a Molecule tenant platform as an external workspace:
registers with the one-time registration token, heartbeats, and keeps the workspace's bearer token in the
state directory, so a restart needs no new token. Stops cleanly on SIGTERM or SIGINT.

  --platform URL               the tenant platform (env PLATFORM_URL)
  --url URL                    where the platform reaches this agent; registered with the platform
  --token-file FILE            a file holding the one-time registration token from the connection bundle
                               (or env WORKSPACE_BOOT_TOKEN); not needed once a bearer token is stored
  --token TOKEN                the same token on the command line: works, but every user of this machine
                               can read it in the process list (ps), so prefer the two above
  --workspace ID               the workspace id (env WORKSPACE_ID)
  --bundle FILE                the connection bundle, or the whole create response, as JSON:
                               gives the platform, workspace and token when they are not set otherwise
  --port N                     port to listen on (default: the port of --url, else 8000)
  --host H                     address to listen on (default 127.0.0.1)
  --state-dir DIR              where the bearer token is kept (env WORKSPACE_STATE_DIR, default ~/.molecule/agent)
  --heartbeat-interval-ms N    longest time between heartbeats (env HEARTBEAT_INTERVAL_MS, or
                               HEARTBEAT_INTERVAL_SECONDS; else the bundle's heartbeat_interval_seconds;
                               default ${DEFAULT_HEARTBEAT_INTERVAL_MS}); the platform's answers shorten it when it
                               needs heartbeats more often
  -h, --help                   this text

Exit status: 0 stopped (a signal, or the platform reports the workspace deleted), 1 failed (e.g. the
token was refused or revoked: a deleted workspace's token is), 2 bad usage.
`;

export interface CliRunOptions {
  platformUrl: string;
  workspaceId: string;
  /** Absent when the bearer token is expected in the state directory. */
  token: string | undefined;
  url: string;
  port: number;
  host: string;
  stateDir: string;
  heartbeatIntervalMs: number;
}

/** `warnings`: one line each, printed to stderr before the agent starts. */
export type CliCommand = { kind: "help" } | { kind: "run"; options: CliRunOptions; warnings: string[] };

export const TOKEN_FLAG_WARNING =
  "warning: --token is visible to every user of this machine in the process list; pass the token in " +
  "WORKSPACE_BOOT_TOKEN or --token-file instead";

/** Bad usage: one line on stderr, exit 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

type Env = Readonly<Record<string, string | undefined>>;

export interface ParseContext {
  env: Env;
  readFile?: (path: string) => string;
  home?: string;
}

/** Pure apart from reading `--bundle`: the command, or a UsageError naming what is wrong. */
export function parseCli(argv: readonly string[], context: ParseContext): CliCommand {
  let parsed: ReturnType<typeof parseOptions>;
  try {
    parsed = parseOptions(argv);
  } catch (err) {
    throw new UsageError(parseProblem(err));
  }
  const { values, positionals } = parsed;
  if (values.help) return { kind: "help" };
  const [command, ...rest] = positionals;
  if (command === undefined) throw new UsageError("missing command: molecule-agent run …");
  if (command !== "run")
    throw new UsageError(`unknown command ${JSON.stringify(command)}; the command is run`);
  if (rest.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])}`);

  const env = context.env;
  const bundle = values.bundle === undefined ? {} : readBundle(values.bundle, context.readFile);
  if (values.token !== undefined && values["token-file"] !== undefined) {
    throw new UsageError("--token and --token-file are both given; use one (--token-file)");
  }
  const tokenFile =
    values["token-file"] === undefined ? undefined : readTokenFile(values["token-file"], context.readFile);
  const platformUrl = httpUrl(
    "--platform",
    values.platform ?? bundle.platformUrl ?? nonEmpty(env.PLATFORM_URL) ?? missing("--platform"),
  );
  const workspaceId =
    values.workspace ?? bundle.workspaceId ?? nonEmpty(env.WORKSPACE_ID) ?? missing("--workspace");
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(workspaceId)) {
    throw new UsageError(`--workspace must be a workspace id (ws_…), got ${JSON.stringify(workspaceId)}`);
  }
  const url = httpUrl("--url", values.url ?? missing("--url"));
  const urlPort = new URL(url).port;
  return {
    kind: "run",
    warnings: values.token === undefined ? [] : [TOKEN_FLAG_WARNING],
    options: {
      platformUrl,
      workspaceId,
      token: values.token ?? tokenFile ?? bundle.token ?? nonEmpty(env.WORKSPACE_BOOT_TOKEN),
      url,
      port: integer("--port", values.port, urlPort === "" ? 8000 : Number(urlPort), 0, 65_535),
      host: values.host ?? "127.0.0.1",
      stateDir:
        values["state-dir"] ??
        nonEmpty(env.WORKSPACE_STATE_DIR) ??
        join(context.home ?? homedir(), ".molecule", "agent"),
      heartbeatIntervalMs: heartbeatInterval(values["heartbeat-interval-ms"], env, bundle.intervalSeconds),
    },
  };
}

function parseOptions(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: true,
    options: {
      platform: { type: "string" },
      token: { type: "string" },
      "token-file": { type: "string" },
      url: { type: "string" },
      workspace: { type: "string" },
      bundle: { type: "string" },
      port: { type: "string" },
      host: { type: "string" },
      "state-dir": { type: "string" },
      "heartbeat-interval-ms": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
}

function firstLine(message: string): string {
  return message.split("\n")[0]?.trim() ?? message;
}

/** node:util's parse errors explain positionals at length; the first sentence names the problem. */
function parseProblem(err: unknown): string {
  const message = firstLine(err instanceof Error ? err.message : String(err));
  return `${message.split(/\.\s/)[0]?.replace(/\.$/, "") ?? message} (see --help)`;
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed ? trimmed : undefined;
}

function missing(flag: string): never {
  throw new UsageError(`${flag} is required (see --help)`);
}

function httpUrl(flag: string, value: string): string {
  try {
    const parsed = new URL(value);
    if (parsed.protocol === "http:" || parsed.protocol === "https:") return value;
  } catch {}
  throw new UsageError(`${flag} must be an http(s) URL, got ${JSON.stringify(value)}`);
}

/**
 * The flag, else `HEARTBEAT_INTERVAL_MS`, else `HEARTBEAT_INTERVAL_SECONDS` (the name the platform injects into
 * managed workspaces), else the bundle's `heartbeat_interval_seconds`, else 30 s.
 */
function heartbeatInterval(flag: string | undefined, env: Env, bundleSeconds: number | undefined): number {
  if (flag !== undefined) return integer("--heartbeat-interval-ms", flag, 0, 100, 3_600_000);
  const ms = nonEmpty(env.HEARTBEAT_INTERVAL_MS);
  if (ms !== undefined) return integer("HEARTBEAT_INTERVAL_MS", ms, 0, 100, 3_600_000);
  const seconds = nonEmpty(env.HEARTBEAT_INTERVAL_SECONDS);
  if (seconds !== undefined) return integer("HEARTBEAT_INTERVAL_SECONDS", seconds, 0, 1, 3_600) * 1000;
  return bundleSeconds === undefined ? DEFAULT_HEARTBEAT_INTERVAL_MS : bundleSeconds * 1000;
}

function integer(flag: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value < min || value > max) {
    throw new UsageError(`${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

/** The registration token kept in a file (surrounding whitespace and a final newline are dropped). */
function readTokenFile(
  path: string,
  readFile: (path: string) => string = (p) => readFileSync(p, "utf8"),
): string {
  let text: string;
  try {
    text = readFile(path);
  } catch (err) {
    throw new UsageError(`--token-file ${path}: ${(err as NodeJS.ErrnoException).code ?? "unreadable"}`);
  }
  const token = text.trim();
  if (token === "") throw new UsageError(`--token-file ${path} is empty`);
  if (/\s/.test(token)) throw new UsageError(`--token-file ${path} holds more than one token`);
  return token;
}

/** The connection bundle from `POST /workspaces {external: true}`: the bundle itself or the whole response. */
function readBundle(
  path: string,
  readFile: (path: string) => string = (p) => readFileSync(p, "utf8"),
): { platformUrl?: string; workspaceId?: string; token?: string; intervalSeconds?: number } {
  let data: unknown;
  try {
    data = JSON.parse(readFile(path));
  } catch (err) {
    const reason =
      err instanceof SyntaxError ? "not JSON" : ((err as NodeJS.ErrnoException).code ?? "unreadable");
    throw new UsageError(`--bundle ${path}: ${reason}`);
  }
  const root = data !== null && typeof data === "object" ? (data as Record<string, unknown>) : {};
  const connection =
    root.connection !== null && typeof root.connection === "object"
      ? (root.connection as Record<string, unknown>)
      : root;
  const text = (key: string) =>
    typeof connection[key] === "string" ? (connection[key] as string) : undefined;
  if (text("workspace_id") === undefined) {
    throw new UsageError(
      `--bundle ${path}: no workspace_id; expected the connection bundle of a create response`,
    );
  }
  const interval = connection.heartbeat_interval_seconds;
  return {
    platformUrl: text("platform_url"),
    workspaceId: text("workspace_id"),
    token: text("registration_token"),
    intervalSeconds:
      typeof interval === "number" && Number.isInteger(interval) && interval >= 1 && interval <= 3_600
        ? interval
        : undefined,
  };
}

/**
 * The `run` flags for these options, in the form `parseCli` reads back (for scripts and tests that start the CLI).
 * Options left out are left to their defaults. The token is never a flag (the process list would show it): pass it
 * as `WORKSPACE_BOOT_TOKEN` in the process's environment.
 */
export function runFlags(options: Partial<Omit<CliRunOptions, "token">>): string[] {
  const flags: [string, string | number | undefined][] = [
    ["--platform", options.platformUrl],
    ["--workspace", options.workspaceId],
    ["--url", options.url],
    ["--port", options.port],
    ["--host", options.host],
    ["--state-dir", options.stateDir],
    ["--heartbeat-interval-ms", options.heartbeatIntervalMs],
  ];
  return flags.flatMap(([flag, value]) => (value === undefined ? [] : [flag, String(value)]));
}

/** Runs the agent until a signal or the workspace's deletion; returns the exit status. */
export async function runCli(
  argv: readonly string[],
  io: { env: Env; stdout: (text: string) => void; stderr: (text: string) => void },
): Promise<number> {
  let command: CliCommand;
  try {
    command = parseCli(argv, { env: io.env });
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr(`molecule-agent: ${err.message}\n`);
    return 2;
  }
  if (command.kind === "help") {
    io.stdout(USAGE);
    return 0;
  }
  for (const warning of command.warnings) io.stderr(`molecule-agent: ${warning}\n`);
  const options = command.options;
  const log = createJsonLogger({ base: { service: "molecule-agent", workspaceId: options.workspaceId } });

  try {
    const stop = await runEchoProcess({
      platformUrl: options.platformUrl,
      workspaceId: options.workspaceId,
      bootToken: options.token,
      stateDir: options.stateDir,
      port: options.port,
      host: options.host,
      publicUrl: options.url,
      card: { ...ECHO_CARD, name: options.workspaceId },
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      log,
      starting: {
        platformUrl: options.platformUrl,
        url: options.url,
        port: options.port,
        stateDir: options.stateDir,
        registration:
          options.token === undefined ? "stored bearer token expected" : "registration token given",
      },
    });
    if (stop.reason === "removed")
      io.stderr(`molecule-agent: workspace ${options.workspaceId} was deleted\n`);
    log("info", "exit", { reason: stop.reason });
    return 0;
  } catch (err) {
    log("error", "exit", { reason: "failed", ...errorFields(err) });
    const message = err instanceof Error ? err.message : String(err);
    io.stderr(`molecule-agent: ${err instanceof CredentialsError ? message : firstLine(message)}\n`);
    return 1;
  }
}

/** True when this file is the program being run (directly, or through the package's bin link). */
function isEntry(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntry()) {
  runCli(process.argv.slice(2), {
    env: process.env,
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  }).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`molecule-agent: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}

#!/usr/bin/env tsx
/**
 * `molecule-cp`: what an operator does daily with a control plane, through its admin API: orgs, their tenants
 * (stop, start, redeploy), workspace image rollouts, backups, the reconciler and the counters. Tables for people, `--json` for scripts; the server's error code, message and request
 * id on failure.
 *
 *   CP_URL=https://cp.example.com CP_ADMIN_API_TOKEN=… npx tsx apps/control-plane/src/cli.ts orgs list
 *
 * The admin token is read from `CP_ADMIN_API_TOKEN` (or `--token`, with a warning: the process list shows it) and
 * only ever sent in the Authorization header; no message this command prints contains it.
 */
import { realpathSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { ADMIN_COMMANDS } from "./cli/admin.ts";
import { BACKUP_COMMANDS } from "./cli/backups.ts";
import { AdminClient, ApiError, ConnectionError } from "./cli/client.ts";
import { type Command, CommandFailed, parseCommandLine, UsageError } from "./cli/command.ts";
import { ORG_COMMANDS } from "./cli/orgs.ts";
import { ROLLOUT_COMMANDS } from "./cli/rollouts.ts";
import { TENANT_COMMANDS } from "./cli/tenants.ts";

export const COMMANDS: readonly Command[] = [
  ...ORG_COMMANDS,
  ...TENANT_COMMANDS,
  ...ROLLOUT_COMMANDS,
  ...BACKUP_COMMANDS,
  ...ADMIN_COMMANDS,
];

export const TITLE = `Usage: molecule-cp <command> [options]

Operates a Molecule control plane through its admin API (CP_URL, CP_ADMIN_API_TOKEN).`;

export interface CliIo {
  env: Readonly<Record<string, string | undefined>>;
  stdout(text: string): void;
  stderr(text: string): void;
  /** stdout is a terminal. */
  tty: boolean;
  fetch?: typeof fetch;
  /** How often a command that follows progress polls (default 1 s). */
  pollIntervalMs?: number;
}

/** Runs one command; returns the exit status (0 done, 1 failed, 2 bad usage). */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    const line = parseCommandLine(argv, io.env, COMMANDS, TITLE);
    if (line.kind === "help") {
      io.stdout(line.text);
      return 0;
    }
    for (const warning of line.warnings) io.stderr(`molecule-cp: ${warning}\n`);
    const client = new AdminClient({
      url: line.url,
      token: line.token,
      timeoutMs: line.timeoutMs,
      fetch: io.fetch,
    });
    return await line.command.run(
      {
        client,
        json: line.json,
        tty: io.tty,
        pollIntervalMs: io.pollIntervalMs ?? 1_000,
        stdout: io.stdout,
        stderr: io.stderr,
        sleep: (ms) => sleep(ms),
        now: () => Date.now(),
      },
      line.input,
    );
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`molecule-cp: ${err.message}\n`);
      return 2;
    }
    if (err instanceof ApiError) {
      io.stderr(`molecule-cp: ${err.describe()}\n`);
      return 1;
    }
    if (err instanceof ConnectionError || err instanceof CommandFailed) {
      io.stderr(`molecule-cp: ${err.message}\n`);
      return 1;
    }
    throw err;
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
  // Interrupted while following something: end the line a progress bar may be on, so the prompt starts afresh.
  process.once("SIGINT", () => {
    if (process.stdout.isTTY) process.stdout.write("\n");
    process.exit(130);
  });
  runCli(process.argv.slice(2), {
    env: process.env,
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    tty: process.stdout.isTTY === true,
  }).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      // Not one of the failures above: a defect here. Its first line only; the stack is no use to an operator.
      const message = err instanceof Error ? err.message : String(err);
      process.stderr.write(`molecule-cp: ${message.split("\n")[0]}\n`);
      process.exitCode = 1;
    },
  );
}

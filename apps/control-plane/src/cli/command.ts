/**
 * The shape of a `molecule-cp` command and the command line read against a list of them: global options, the
 * command's own options and arguments, where the control plane is and the admin token, each from its flag or else
 * the environment. Pure: no I/O.
 */
import { parseArgs } from "node:util";
import type { AdminClient } from "./client.ts";

export type OptionSpec = { type: "string"; short?: string } | { type: "boolean"; short?: string };

export interface CommandIo {
  client: AdminClient;
  /** `--json`: print answers as JSON for scripts instead of tables. */
  json: boolean;
  /** stdout is a terminal: progress may redraw one line instead of printing a line per change. */
  tty: boolean;
  pollIntervalMs: number;
  stdout(text: string): void;
  stderr(text: string): void;
  sleep(ms: number): Promise<void>;
  now(): number;
}

export interface Invocation {
  /** The command's positional arguments, in `Command.args` order. */
  args: string[];
  values: Record<string, string | boolean | undefined>;
}

export interface Command {
  /** `["orgs", "list"]`, or one word for a command without a group (`["stats"]`). */
  name: readonly string[];
  summary: string;
  /** What follows the name in the usage line: `<slug> --name NAME [--canary]`. */
  synopsis?: string;
  /** The command's options, one per line, shown by `--help`. */
  details?: string;
  options?: Record<string, OptionSpec>;
  /** Names of the positional arguments, all required. */
  args?: readonly string[];
  /** Returns the exit status. */
  run(io: CommandIo, input: Invocation): Promise<number>;
}

/** Bad usage: one line on stderr, exit 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The command could not do what was asked (e.g. what it waited for failed): one line on stderr, exit 1. */
export class CommandFailed extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CommandFailed";
  }
}

const GLOBAL_OPTIONS = {
  url: { type: "string" },
  token: { type: "string" },
  json: { type: "boolean" },
  timeout: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies Record<string, OptionSpec>;

export const GLOBAL_HELP = `Options for every command:
  --url URL        the control plane (env CP_URL)
  --token TOKEN    the admin token (env CP_ADMIN_API_TOKEN); on the command line every user of this
                   machine can read it in the process list (ps), so prefer the environment
  --json           print the control plane's answers as JSON, for scripts
  --timeout S      seconds to wait for each answer (default 60)
  -h, --help       this text; with a command, that command's help

Exit status: 0 done, 1 the control plane refused or failed (its error code, message and request id
on stderr), 2 bad usage.
`;

export const TOKEN_FLAG_WARNING =
  "warning: --token is visible to every user of this machine in the process list; set CP_ADMIN_API_TOKEN instead";

export const DEFAULT_TIMEOUT_SECONDS = 60;

type Env = Readonly<Record<string, string | undefined>>;

export type CommandLine =
  | { kind: "help"; text: string }
  | {
      kind: "run";
      command: Command;
      input: Invocation;
      url: string;
      token: string;
      json: boolean;
      timeoutMs: number;
      /** One line each, for stderr before the command runs. */
      warnings: string[];
    };

export function usageLine(command: Command): string {
  return ["molecule-cp", ...command.name, command.synopsis ?? ""].join(" ").trimEnd();
}

/** The overview: every command's usage with its summary under it, then the global options. */
export function overview(commands: readonly Command[], title: string): string {
  const entries = commands.map(
    (command) =>
      `  ${[...command.name, command.synopsis ?? ""].join(" ").trimEnd()}\n      ${command.summary}`,
  );
  return `${title}\n\nCommands:\n${entries.join("\n")}\n\n${GLOBAL_HELP}`;
}

function commandHelp(command: Command): string {
  const details = command.details ? `\n${command.details.trimEnd()}\n` : "";
  const summary = `${command.summary.charAt(0).toUpperCase()}${command.summary.slice(1)}.`;
  return `Usage: ${usageLine(command)} [options]\n\n${summary}\n${details}\n${GLOBAL_HELP}`;
}

/** Reads the command line: the help text asked for, or the command to run with its connection; else a UsageError. */
export function parseCommandLine(
  argv: readonly string[],
  env: Env,
  commands: readonly Command[],
  title: string,
): CommandLine {
  const words = commandWords(argv);
  const help = helpAsked(argv);
  const command = commands.find((candidate) => candidate.name.every((part, i) => words[i] === part));
  if (!command) {
    if (words.length === 0) {
      if (help) return { kind: "help", text: overview(commands, title) };
      throw new UsageError("missing command (see --help)");
    }
    const group = commands.filter((candidate) => candidate.name.length > 1 && candidate.name[0] === words[0]);
    if (group.length > 0 && (words.length === 1 || help)) {
      if (help) return { kind: "help", text: overview(group, title) };
      const names = group.map((candidate) => candidate.name[1]).join(", ");
      throw new UsageError(`${words[0]} needs one of: ${names} (see --help)`);
    }
    const unknown = group.length > 0 ? `${words[0]} ${words[1]}` : words[0];
    throw new UsageError(`unknown command ${JSON.stringify(unknown)} (see --help)`);
  }

  // The second pass knows only this command's options: another command's option is an error here.
  const { values, positionals } = parse(argv, { ...GLOBAL_OPTIONS, ...command.options });
  if (values.help) return { kind: "help", text: commandHelp(command) };
  const args = positionals.slice(command.name.length);
  const expected = command.args ?? [];
  if (args.length < expected.length) {
    throw new UsageError(`missing <${expected[args.length]}>: ${usageLine(command)} (see --help)`);
  }
  if (args.length > expected.length) {
    throw new UsageError(`unexpected argument ${JSON.stringify(args[expected.length])} (see --help)`);
  }

  const url = text(values.url) ?? nonEmpty(env.CP_URL);
  if (url === undefined) throw new UsageError("no control plane URL: set CP_URL or pass --url");
  if (!isHttpUrl(url))
    throw new UsageError(`the control plane URL must be http(s), got ${JSON.stringify(url)}`);
  const flagToken = text(values.token);
  const token = flagToken ?? nonEmpty(env.CP_ADMIN_API_TOKEN);
  if (token === undefined) throw new UsageError("no admin token: set CP_ADMIN_API_TOKEN or pass --token");
  return {
    kind: "run",
    command,
    input: { args, values },
    url,
    token,
    json: values.json === true,
    timeoutMs: wholeNumber("--timeout", text(values.timeout), DEFAULT_TIMEOUT_SECONDS, 1, 3600) * 1000,
    warnings: flagToken === undefined ? [] : [TOKEN_FLAG_WARNING],
  };
}

/**
 * The command's words: the first two arguments that are not global options (with their values). They come before the
 * command's own options, whose names and types differ between commands (`--canary` is a flag of `orgs create` and
 * takes a list in `fleet redeploy`), so the first option that is not global ends them.
 */
function commandWords(argv: readonly string[]): string[] {
  const words: string[] = [];
  for (let i = 0; i < argv.length && words.length < 2; i += 1) {
    const arg = argv[i] ?? "";
    if (arg === "--") break;
    if (!arg.startsWith("-")) {
      words.push(arg);
      continue;
    }
    const name = arg.replace(/^--?/, "").split("=")[0] ?? "";
    const spec = Object.entries(GLOBAL_OPTIONS).find(
      ([long, option]) => long === name || ("short" in option && option.short === name),
    )?.[1];
    if (!spec) break;
    if (spec.type === "string" && !arg.includes("=")) i += 1;
  }
  return words;
}

function helpAsked(argv: readonly string[]): boolean {
  const end = argv.indexOf("--");
  return (end === -1 ? argv : argv.slice(0, end)).some((arg) => arg === "-h" || arg === "--help");
}

function parse(argv: readonly string[], options: Record<string, OptionSpec>) {
  try {
    return parseArgs({ args: [...argv], options, strict: true, allowPositionals: true });
  } catch (err) {
    throw new UsageError(parseProblem(err));
  }
}

/** node:util's parse errors explain at length; the first sentence names the problem. */
function parseProblem(err: unknown): string {
  const message = (err instanceof Error ? err.message : String(err)).split("\n")[0]?.trim() ?? "";
  return `${message.split(/\.\s/)[0]?.replace(/\.$/, "") ?? message} (see --help)`;
}

function text(value: string | boolean | undefined): string | undefined {
  return typeof value === "string" ? value : undefined;
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed ? trimmed : undefined;
}

function isHttpUrl(value: string): boolean {
  try {
    const protocol = new URL(value).protocol;
    return protocol === "http:" || protocol === "https:";
  } catch {
    return false;
  }
}

/** A whole number within bounds, from a flag; `fallback` when absent. */
export function wholeNumber(
  flag: string,
  raw: string | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value < min || value > max) {
    const range = max < Number.MAX_SAFE_INTEGER ? ` from ${min} to ${max}` : "";
    throw new UsageError(`${flag} must be a whole number${range}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

/** A string option of the invocation (undefined when absent). */
export function option(input: Invocation, name: string): string | undefined {
  return text(input.values[name]);
}

export function flag(input: Invocation, name: string): boolean {
  return input.values[name] === true;
}

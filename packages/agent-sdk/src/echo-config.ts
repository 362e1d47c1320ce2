/** Configuration of the reference echo workspace, read once from the environment by `echo-agent.ts`. */
import { defaultStateDir } from "./credentials.ts";
import { DEFAULT_HEARTBEAT_INTERVAL_MS } from "./heartbeat.ts";

export interface EchoConfig {
  workspaceId: string;
  platformUrl: string;
  bootToken: string | undefined;
  /** A warm pool member's token: the agent waits for its claim before it registers. */
  poolToken?: string | undefined;
  port: number;
  host: string;
  /** undefined: `http://127.0.0.1:<real port>`. */
  publicUrl: string | undefined;
  heartbeatIntervalMs: number;
  stateDir: string;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

type Env = Readonly<Record<string, string | undefined>>;

/** Pure: returns the config or throws a ConfigError naming the variable. */
export function loadEchoConfig(env: Env): EchoConfig {
  const workspaceId = required(env, "WORKSPACE_ID");
  const platformUrl = url(env, "PLATFORM_URL", required(env, "PLATFORM_URL"));
  const publicUrl = optional(env, "AGENT_PUBLIC_URL");
  return {
    workspaceId,
    platformUrl,
    bootToken: optional(env, "WORKSPACE_BOOT_TOKEN"),
    poolToken: optional(env, "WORKSPACE_POOL_TOKEN"),
    port: integer(env, "AGENT_PORT", 8000, 0, 65_535),
    host: optional(env, "AGENT_HOST") ?? "0.0.0.0",
    publicUrl: publicUrl === undefined ? undefined : url(env, "AGENT_PUBLIC_URL", publicUrl),
    heartbeatIntervalMs: heartbeatInterval(env),
    stateDir: defaultStateDir(env),
  };
}

/**
 * `HEARTBEAT_INTERVAL_MS` when set, else `HEARTBEAT_INTERVAL_SECONDS` (what the platform injects into managed
 * workspaces, derived from its `HEARTBEAT_STALE_AFTER`), else 30 s.
 */
function heartbeatInterval(env: Env): number {
  if (optional(env, "HEARTBEAT_INTERVAL_MS") !== undefined) {
    return integer(env, "HEARTBEAT_INTERVAL_MS", DEFAULT_HEARTBEAT_INTERVAL_MS, 100, 3_600_000);
  }
  return integer(env, "HEARTBEAT_INTERVAL_SECONDS", DEFAULT_HEARTBEAT_INTERVAL_MS / 1000, 1, 3_600) * 1000;
}

function optional(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

function required(env: Env, name: string): string {
  const value = optional(env, name);
  if (value === undefined) throw new ConfigError(`${name} is required`);
  return value;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = optional(env, name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function url(_env: Env, name: string, value: string): string {
  try {
    const parsed = new URL(value);
    if (parsed.protocol === "http:" || parsed.protocol === "https:") return value;
  } catch {}
  throw new ConfigError(`${name} must be an http(s) URL, got ${JSON.stringify(value)}`);
}

import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { controlPlaneOpenApi } from "@molecule/control-plane";
import { tenantOpenApi } from "@molecule/tenant-platform";
import { freePort } from "./net.ts";
import { AnswerChecker, checkAnswerText } from "./openapi.ts";

export { freePort };

/** The repository root: the platform is started from here so `--import tsx` resolves the root devDependency. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const MAIN = join(REPO_ROOT, "apps/tenant-platform/src/main.ts");
/** The control plane's entry point, for spawnPlatform's `main` (see test-support/control-plane.ts). */
export const CONTROL_PLANE_MAIN = join(REPO_ROOT, "apps/control-plane/src/main.ts");

/** Only these of the test runner's variables reach the platform; everything else is given explicitly. */
const INHERITED = [
  "PATH",
  "HOME",
  "TMPDIR",
  "DOCKER_HOST",
  "DOCKER_CONFIG",
  "DOCKER_CERT_PATH",
  "DOCKER_TLS_VERIFY",
];

export interface PlatformExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface PlatformProcess {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** The deployment label the platform puts on every docker resource it makes. */
  deployment: string;
  dataDir: string;
  /** The admin bearer: the one given in env, or the one the platform printed when it generated it. */
  adminToken: string;
  pid: number;
  /** Everything the process wrote to stdout and stderr so far, interleaved in arrival order. */
  output(): string;
  kill(signal?: NodeJS.Signals): Promise<PlatformExit>;
  waitForExit(timeoutMs?: number): Promise<PlatformExit>;
  /** Calls the platform's HTTP API with the admin bearer; the body is parsed JSON when there is one. */
  call(
    method: string,
    path: string,
    body?: unknown,
    // biome-ignore lint/suspicious/noExplicitAny: API answers are asserted on field by field in tests
  ): Promise<{ status: number; body: any }>;
}

export interface StartOptions {
  /** Added over the defaults; a value of `undefined` removes the default (e.g. ADMIN_TOKEN: undefined). */
  env?: Record<string, string | undefined>;
  /** MOLECULE_DATA_DIR; a fresh temporary folder when not given. */
  dataDir?: string;
  /** How long to wait for /health (and the printed token) before failing with the output. */
  readyTimeoutMs?: number;
}

/** A spawned process that has not been waited for yet: lets a test run it to its exit without /health. */
export interface SpawnedPlatform {
  child: ChildProcess;
  output(): string;
  waitForExit(timeoutMs?: number): Promise<PlatformExit>;
  /** Sends `signal` (default SIGTERM) unless the process has already exited, and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<PlatformExit>;
}

const live = new Set<ChildProcess>();

process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

export function uniqueDeployment(): string {
  return `e2e-${randomBytes(4).toString("hex")}`;
}

function exitOf(child: ChildProcess): PlatformExit | undefined {
  if (child.exitCode !== null || child.signalCode !== null) {
    return { code: child.exitCode, signal: child.signalCode as NodeJS.Signals | null };
  }
  return undefined;
}

/**
 * Spawns `node --import tsx apps/tenant-platform/src/main.ts` (or another service's `main`) with exactly `env`
 * (plus PATH and friends). `imports` are test-only modules loaded (after tsx) before `main`, such as
 * test-support/poison.ts.
 */
export function spawnPlatform(
  env: Record<string, string | undefined>,
  main = MAIN,
  options: { imports?: readonly string[] } = {},
): SpawnedPlatform {
  const childEnv: Record<string, string> = {};
  for (const key of INHERITED) {
    const value = process.env[key];
    if (value !== undefined) childEnv[key] = value;
  }
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined) delete childEnv[key];
    else childEnv[key] = value;
  }
  const imports = (options.imports ?? []).flatMap((module) => ["--import", pathToFileURL(module).href]);
  const child = spawn(process.execPath, ["--import", "tsx", ...imports, main], {
    cwd: REPO_ROOT,
    env: childEnv,
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(child);
  const chunks: string[] = [];
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => chunks.push(chunk));
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => chunks.push(chunk));
  const exited = new Promise<PlatformExit>((resolveExit) => {
    child.once("exit", (code, signal) => {
      live.delete(child);
      resolveExit({ code, signal });
    });
    child.once("error", (error) => {
      chunks.push(`\n[spawn error] ${error.message}\n`);
      live.delete(child);
      resolveExit({ code: -1, signal: null });
    });
  });
  // Streams may still hold the last lines when "exit" fires; "close" comes after they are drained.
  const closed = new Promise<void>((resolveClose) => child.once("close", () => resolveClose()));
  const output = () => chunks.join("");
  const waitForExit = async (timeoutMs = 30_000): Promise<PlatformExit> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`platform pid ${child.pid} did not exit in ${timeoutMs} ms:\n${output()}`)),
        timeoutMs,
      );
    });
    try {
      const exit = await Promise.race([exited, timeout]);
      await Promise.race([closed, new Promise((r) => setTimeout(r, 1_000))]);
      return exit;
    } finally {
      clearTimeout(timer);
    }
  };
  const kill = async (signal: NodeJS.Signals = "SIGTERM"): Promise<PlatformExit> => {
    const done = exitOf(child);
    if (done) return done;
    child.kill(signal);
    return waitForExit();
  };
  return { child, output, waitForExit, kill };
}

/**
 * Waits until `${url}/health` answers and the admin token is known: `adminToken` when given, else the one the process
 * printed (`Admin token…: <token>`). Fails with the process's output if it exits first or does not get there within
 * `readyTimeoutMs` (then it is killed). `name` says which service in the error.
 */
export async function waitUntilHealthy(
  spawned: SpawnedPlatform,
  options: { name: string; url: string; adminToken: string | undefined; readyTimeoutMs: number },
): Promise<string> {
  const { child, output } = spawned;
  const { name, url } = options;
  const deadline = Date.now() + options.readyTimeoutMs;
  let adminToken = options.adminToken;
  for (;;) {
    const exit = exitOf(child);
    if (exit) {
      await spawned.waitForExit(2_000).catch(() => {});
      throw new Error(`${name} exited (${JSON.stringify(exit)}) before answering /health:\n${output()}`);
    }
    const healthy = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1_000) })
      .then((response) => response.ok)
      .catch(() => false);
    adminToken ??= /Admin token[^:]*: (\S+)/.exec(output())?.[1];
    if (healthy && adminToken) return adminToken;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      await spawned.waitForExit(5_000).catch(() => {});
      throw new Error(`${name} did not become healthy at ${url}/health in time:\n${output()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

let tenantAnswers: AnswerChecker | undefined;
let controlPlaneAnswers: AnswerChecker | undefined;

/**
 * Builds the answer checker for a service's document ahead of its first call (a second or more on a busy machine),
 * so a test's first calls are not slowed where timing matters (a kill meant to land mid-provision).
 */
export function prepareAnswerChecks(service: "tenant" | "control-plane"): void {
  answersFor(service === "tenant" ? "/health" : "/cp/health").check(
    "GET",
    "/health",
    200,
    "application/json",
    {
      ok: true,
    },
  );
}

/** The document a real process's answer is held to: the control plane's for `/cp/…`, else the tenant platform's. */
function answersFor(path: string): AnswerChecker {
  if (path.startsWith("/cp/")) {
    controlPlaneAnswers ??= new AnswerChecker(controlPlaneOpenApi());
    return controlPlaneAnswers;
  }
  tenantAnswers ??= new AnswerChecker(tenantOpenApi());
  return tenantAnswers;
}

/**
 * One JSON call with a bearer token; the body is parsed JSON when there is one, else the text. A JSON answer must
 * match the schema its service's OpenAPI document gives for the route and status, or the call throws.
 */
export async function callJson(
  url: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
  // biome-ignore lint/suspicious/noExplicitAny: API answers are asserted on field by field in tests
): Promise<{ status: number; body: any }> {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await response.text();
  checkAnswerText(
    answersFor(path),
    method,
    path,
    response.status,
    response.headers.get("content-type"),
    text,
  );
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, body: parsed };
}

/**
 * Starts the real tenant platform as its own process on a free loopback port with host networking for
 * workspaces, and waits until GET /health answers. Fails with the process's output if it exits first or
 * does not answer in time.
 */
export async function startPlatformProcess(options: StartOptions = {}): Promise<PlatformProcess> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "molecule-e2e-"));
  const defaults: Record<string, string> = {
    PORT: String(await freePort()),
    HOST: "127.0.0.1",
    WORKSPACE_NETWORK: "host",
    MOLECULE_DEPLOYMENT: uniqueDeployment(),
    ADMIN_TOKEN: `adm_${randomBytes(16).toString("hex")}`,
    SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
    LOG_LEVEL: "info",
    MOLECULE_DATA_DIR: dataDir,
  };
  const env: Record<string, string | undefined> = { ...defaults, ...options.env };
  const port = Number(env.PORT);
  const url = `http://127.0.0.1:${port}`;
  const spawned = spawnPlatform(env);
  prepareAnswerChecks("tenant");
  const token = await waitUntilHealthy(spawned, {
    name: "platform",
    url,
    adminToken: env.ADMIN_TOKEN,
    readyTimeoutMs: options.readyTimeoutMs ?? 60_000,
  });

  return {
    url,
    port,
    deployment: String(env.MOLECULE_DEPLOYMENT),
    dataDir: String(env.MOLECULE_DATA_DIR),
    adminToken: token,
    pid: spawned.child.pid ?? -1,
    output: spawned.output,
    waitForExit: spawned.waitForExit,
    kill: spawned.kill,
    call: (method, path, body) => callJson(url, token, method, path, body),
  };
}

/** SIGKILLs every platform process this module started that is still running; for afterAll. */
export async function killAllPlatformProcesses(): Promise<void> {
  const waiting = [...live].map(
    (child) =>
      new Promise<void>((resolveExit) => {
        if (exitOf(child)) return resolveExit();
        child.once("exit", () => resolveExit());
        child.kill("SIGKILL");
      }),
  );
  await Promise.all(waiting);
}

/** Runs the restore command (apps/tenant-platform/src/restore.ts) as an operator would; its exit code and output. */
export function runRestore(args: readonly string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", join(REPO_ROOT, "apps/tenant-platform/src/restore.ts"), ...args],
      { cwd: REPO_ROOT, env: { PATH: process.env.PATH ?? "" }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8");
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8");
    });
    child.once("close", (code) => resolve({ code, output }));
  });
}

/**
 * What the agent-facing benches (a2a-proxy, heartbeats) share: the real tenant platform as its own process on a
 * fresh PostgreSQL database, workspace rows written straight into that database, a bounded-concurrency request
 * loop, percentiles, and the bounded main wrapper. Not a bench itself.
 */
import { rmSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { createIdGenerator } from "@molecule/contracts";
import { workspaces, workspaceTokens } from "@molecule/db";
import { hashToken, mintToken } from "@molecule/identity";
import { loadConfig } from "@molecule/tenant-platform/config";
import { createTestDatabase, ensureTemplate, type TestDatabase } from "../test-support/pg.ts";
import { type PlatformProcess, REPO_ROOT, startPlatformProcess } from "../test-support/process.ts";

/** A platform process the bench reaches over its API only. */
export interface BenchProcess {
  process: PlatformProcess;
  /** The org the platform serves (what `MOLECULE_ORG_ID` resolves to). */
  orgId: string;
  /** Stops the process (SIGTERM), drops its database, removes the data folder. Idempotent. */
  close(): Promise<void>;
}

export interface BenchPlatform extends BenchProcess {
  /** The platform's database, open from the bench too (for writing fixtures). */
  database: TestDatabase;
}

/** The databases a bench runs against, from `BENCH_DATABASE` (`postgres`, `embedded`, or both comma-separated). */
export function benchDatabases(fallback = "postgres,embedded"): ("postgres" | "embedded")[] {
  const names = (process.env.BENCH_DATABASE ?? fallback).split(",").map((name) => name.trim());
  const known = names.filter(
    (name): name is "postgres" | "embedded" => name === "postgres" || name === "embedded",
  );
  if (known.length !== names.length || known.length === 0) {
    throw new Error(`BENCH_DATABASE must list postgres and/or embedded, got ${process.env.BENCH_DATABASE}`);
  }
  return known;
}

/**
 * `BENCH_CPU_PROF=<folder>` profiles the platform process (bench/cpu-profile.mjs): a `.cpuprofile` per process,
 * written when it exits after SIGTERM; open it in Chrome's DevTools or speedscope.
 */
function profiling(): Record<string, string> {
  const folder = process.env.BENCH_CPU_PROF;
  if (!folder) return {};
  return {
    NODE_OPTIONS: `--import ${pathToFileURL(join(REPO_ROOT, "bench/cpu-profile.mjs")).href}`,
    BENCH_CPU_PROF_DIR: resolve(folder),
  };
}

/**
 * Every rate-limit budget on and far above any load a bench makes: the limiter's cost is in what is measured, its
 * refusals are not (one caller token drives the A2A bench at thousands of requests a second).
 */
export const BENCH_RATE_LIMITS: Record<string, string> = {
  RATE_LIMIT_API_PER_MINUTE: "1000000000",
  RATE_LIMIT_AGENT_PER_MINUTE: "1000000000",
  RATE_LIMIT_A2A_PER_MINUTE: "1000000000",
};

/**
 * The platform on its embedded database (PGlite in its data folder, no `DATABASE_URL`), as `pnpm start` runs it,
 * with the same settings as {@link startBenchPlatform}. Fixtures go through its API.
 */
export async function startEmbeddedBenchPlatform(env: Record<string, string> = {}): Promise<BenchProcess> {
  const platformEnv: Record<string, string> = {
    CONTAINER_BACKEND: "docker",
    ALLOW_INSECURE_AGENT_URLS: "true",
    ALLOW_PRIVATE_AGENT_URLS: "true",
    STATUS_SWEEP_INTERVAL: "3600",
    ...BENCH_RATE_LIMITS,
    ...profiling(),
    ...env,
  };
  const process = await startPlatformProcess({ env: platformEnv });
  let closing: Promise<void> | undefined;
  return {
    process,
    orgId: loadConfig(platformEnv).org.id,
    close() {
      closing ??= (async () => {
        await process.kill("SIGTERM").catch(() => process.kill("SIGKILL"));
        rmSync(process.dataDir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}

/**
 * `apps/tenant-platform/src/main.ts` as a child process on a fresh database made from the migrated template.
 * Agent URLs on loopback over plain HTTP are allowed (the benches' agents listen on 127.0.0.1). The liveness
 * sweep is pushed out of the measured window: it asks the backend about every live workspace, and the rows the
 * benches write have no container behind them.
 */
export async function startBenchPlatform(env: Record<string, string> = {}): Promise<BenchPlatform> {
  await ensureTemplate();
  const database = await createTestDatabase();
  const platformEnv: Record<string, string> = {
    DATABASE_URL: database.url,
    CONTAINER_BACKEND: "docker",
    ALLOW_INSECURE_AGENT_URLS: "true",
    ALLOW_PRIVATE_AGENT_URLS: "true",
    STATUS_SWEEP_INTERVAL: "3600",
    ...BENCH_RATE_LIMITS,
    ...profiling(),
    ...env,
  };
  let process: PlatformProcess;
  try {
    process = await startPlatformProcess({ env: platformEnv });
  } catch (error) {
    await database.drop();
    throw error;
  }
  let closing: Promise<void> | undefined;
  return {
    process,
    database,
    orgId: loadConfig(platformEnv).org.id,
    close() {
      closing ??= (async () => {
        await process.kill("SIGTERM").catch(() => process.kill("SIGKILL"));
        await database.drop();
        rmSync(process.dataDir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}

const SEED_BATCH = 5_000;

export interface SeededWorkspace {
  id: string;
  /** The workspace's bearer token when `withTokens` was set, else "". */
  token: string;
}

/**
 * Writes `count` workspace rows (runtime echo, tier 2, docker backend, no container), and with `withTokens` one
 * bearer token each, hashed the way registration stores it, so each can authenticate as an agent that
 * registered. Rows go in batches of 5,000 (one INSERT each, under PostgreSQL's 65,535 parameters).
 */
export async function seedWorkspaces(
  platform: BenchPlatform,
  count: number,
  options: { status: "awaiting_agent" | "online"; withTokens: boolean; namePrefix?: string },
): Promise<SeededWorkspace[]> {
  const ids = createIdGenerator();
  const now = new Date();
  const seeded: SeededWorkspace[] = Array.from({ length: count }, () => ({
    id: ids.next("ws"),
    token: options.withTokens ? mintToken("mwt") : "",
  }));
  const { db } = platform.database;
  for (let start = 0; start < count; start += SEED_BATCH) {
    const batch = seeded.slice(start, start + SEED_BATCH);
    await db.insert(workspaces).values(
      batch.map((ws, i) => ({
        id: ws.id,
        orgId: platform.orgId,
        name: `${options.namePrefix ?? "bench"}-${start + i}`,
        runtime: "echo",
        tier: 2,
        backend: "docker",
        status: options.status,
        lastHeartbeatAt: options.status === "online" ? now : null,
      })),
    );
    if (options.withTokens) {
      await db
        .insert(workspaceTokens)
        .values(
          batch.map((ws) => ({ tokenHash: hashToken(ws.token), workspaceId: ws.id, kind: "auth" as const })),
        );
    }
  }
  return seeded;
}

export interface LoadResult {
  requests: number;
  /** Milliseconds, one per request (failed ones included), in completion order. */
  latencies: number[];
  /** What went wrong, counted by label (e.g. "HTTP 401", "ECONNRESET"). */
  errors: Map<string, number>;
  elapsedMs: number;
}

/**
 * Runs `send(i)` with at most `concurrency` in flight until `count` requests were started or `durationMs` passed,
 * whichever is set (the first wins when both are). `send` resolves to undefined on success or to an error label;
 * a throw is counted under the error's code or name.
 */
export async function drive(options: {
  concurrency: number;
  count?: number;
  durationMs?: number;
  send: (i: number) => Promise<string | undefined>;
}): Promise<LoadResult> {
  const latencies: number[] = [];
  const errors = new Map<string, number>();
  const started = performance.now();
  const deadline = options.durationMs === undefined ? Number.POSITIVE_INFINITY : started + options.durationMs;
  const count = options.count ?? Number.POSITIVE_INFINITY;
  let next = 0;
  const worker = async () => {
    for (;;) {
      if (next >= count || performance.now() >= deadline) return;
      const i = next++;
      const t0 = performance.now();
      let failure: string | undefined;
      try {
        failure = await options.send(i);
      } catch (error) {
        failure = errorLabel(error);
      }
      latencies.push(performance.now() - t0);
      if (failure) errors.set(failure, (errors.get(failure) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  return { requests: latencies.length, latencies, errors, elapsedMs: performance.now() - started };
}

/** Several runs of the same kind as one (e.g. the blocks of an interleaved measurement). */
export function combine(results: LoadResult[]): LoadResult {
  const errors = new Map<string, number>();
  for (const result of results)
    for (const [label, n] of result.errors) errors.set(label, (errors.get(label) ?? 0) + n);
  return {
    requests: results.reduce((sum, r) => sum + r.requests, 0),
    latencies: results.flatMap((r) => r.latencies),
    errors,
    elapsedMs: results.reduce((sum, r) => sum + r.elapsedMs, 0),
  };
}

function errorLabel(error: unknown): string {
  const { code, name } = (error ?? {}) as { code?: unknown; name?: unknown };
  return typeof code === "string" ? code : typeof name === "string" ? name : "error";
}

export interface Summary {
  p50: number;
  p99: number;
  mean: number;
}

/** Nearest-rank percentiles and the mean, in milliseconds. */
export function summarize(latencies: number[]): Summary {
  const sorted = Float64Array.from(latencies).sort();
  const rank = (p: number) =>
    sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
  const mean = sorted.reduce((sum, v) => sum + v, 0) / sorted.length;
  return { p50: rank(50), p99: rank(99), mean };
}

export function errorText(errors: Map<string, number>): string {
  const total = [...errors.values()].reduce((sum, n) => sum + n, 0);
  if (total === 0) return "0";
  return `${total} (${[...errors].map(([label, n]) => `${label}×${n}`).join(", ")})`;
}

/** A number right-aligned in `width` with `digits` decimals. */
export const num = (value: number, width = 8, digits = 2) => value.toFixed(digits).padStart(width);

/** Where the figures were taken: node, CPUs, and the 1-minute load average (other work on the machine skews them). */
export function machine(): string {
  const cores = cpus();
  return `node ${process.version}, ${cores.length} × ${cores[0]?.model.trim() ?? "cpu"}, load average ${loadavg()[0]?.toFixed(2)}`;
}

export function envNumber(name: string, fallback: number): number {
  const value = Number(process.env[name]);
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

/**
 * Runs `main`, then exits 0 or 1. Past `hardLimitMs` it runs `cleanup` and exits 1; `cleanup` also runs after a
 * failure of `main` (started child processes are killed on exit by test-support/process.ts).
 */
export async function runBench(
  main: () => Promise<void>,
  options: { hardLimitMs: number; cleanup: () => Promise<void> },
): Promise<never> {
  const hardLimit = setTimeout(() => {
    console.error(`bench exceeded ${options.hardLimitMs} ms; cleaning up and exiting`);
    options.cleanup().finally(() => process.exit(1));
  }, options.hardLimitMs);
  hardLimit.unref();
  let failed = false;
  try {
    await main();
  } catch (error) {
    failed = true;
    console.error(error);
  }
  await options.cleanup().catch((error) => console.error(`cleaning up: ${String(error)}`));
  process.exit(failed ? 1 : 0);
}

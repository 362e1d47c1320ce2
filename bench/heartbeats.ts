/**
 * Heartbeats per second one tenant platform process sustains on PostgreSQL, with latency percentiles, for 1,000 and
 * 10,000 simulated agents, against `GET /health` (no database) of the same process measured in the same run.
 *
 * Per agent count: a fresh database and a fresh platform process (test-support/process.ts, so the load generator
 * does not share its event loop); that many workspace rows, already `online`, each with its own bearer token
 * written straight into the database (hashed as registration stores it; registering 10,000 agents over the API
 * would take longer than the measurement). The load generator is this process: an undici Pool with keep-alive and
 * a fixed number of requests in flight, agents taken round-robin so each heartbeats in turn with its own token.
 * Every heartbeat is a full authenticated `POST /registry/heartbeat`; a non-200 answer (or an `ok` missing from
 * it) counts as an error. Health and heartbeats alternate in ABBA halves so machine noise hits both.
 * The platform logs at its default level (info), as it does in production: one line per request, except successful
 * heartbeats, which are logged at debug.
 *
 *   pnpm exec tsx bench/heartbeats.ts
 *   BENCH_AGENTS=1000,10000  BENCH_DURATION_S=10 (per kind and agent count)  BENCH_CONCURRENCY=128
 */
import { Pool } from "undici";
import {
  type BenchPlatform,
  combine,
  drive,
  envNumber,
  errorText,
  type LoadResult,
  machine,
  num,
  runBench,
  type SeededWorkspace,
  seedWorkspaces,
  startBenchPlatform,
  summarize,
} from "./lib.ts";

const AGENTS = (process.env.BENCH_AGENTS ?? "1000,10000")
  .split(",")
  .map(Number)
  .filter((n) => Number.isInteger(n) && n > 0);
const DURATION_MS = envNumber("BENCH_DURATION_S", 10) * 1000;
const CONCURRENCY = Math.round(envNumber("BENCH_CONCURRENCY", 128));
const WARMUP_MS = 2_000;
const HARD_LIMIT_MS = AGENTS.length * (2 * DURATION_MS + 60_000) + 60_000;

const open: BenchPlatform[] = [];

interface Row {
  agents: number;
  health: LoadResult;
  heartbeat: LoadResult;
}

async function health(pool: Pool): Promise<string | undefined> {
  const response = await pool.request({ method: "GET", path: "/health" });
  const body = (await response.body.json()) as { ok?: unknown };
  if (response.statusCode !== 200) return `HTTP ${response.statusCode}`;
  return body.ok === true ? undefined : "no ok";
}

async function heartbeat(pool: Pool, agent: SeededWorkspace): Promise<string | undefined> {
  const response = await pool.request({
    method: "POST",
    path: "/registry/heartbeat",
    headers: { authorization: `Bearer ${agent.token}`, "content-type": "application/json" },
    body: JSON.stringify({ workspace_id: agent.id }),
  });
  const text = await response.body.text();
  if (response.statusCode !== 200) return `HTTP ${response.statusCode}`;
  return (JSON.parse(text) as { ok?: unknown }).ok === true ? undefined : "no ok";
}

async function measure(count: number): Promise<Row> {
  const platform = await startBenchPlatform();
  open.push(platform);
  const seeding = performance.now();
  const agents = await seedWorkspaces(platform, count, { status: "online", withTokens: true });
  console.error(`${count} agents written in ${(performance.now() - seeding).toFixed(0)} ms`);

  const pool = new Pool(platform.process.url, { connections: CONCURRENCY, pipelining: 1 });
  let turn = 0;
  const beat = () => heartbeat(pool, agents[turn++ % agents.length] as SeededWorkspace);
  const run = {
    health: (durationMs: number) => drive({ concurrency: CONCURRENCY, durationMs, send: () => health(pool) }),
    heartbeat: (durationMs: number) => drive({ concurrency: CONCURRENCY, durationMs, send: beat }),
  };
  try {
    const first = await beat();
    if (first) throw new Error(`the first heartbeat failed: ${first}`);
    await run.health(WARMUP_MS / 2);
    await run.heartbeat(WARMUP_MS);

    const half = DURATION_MS / 2;
    const healthRuns: LoadResult[] = [];
    const beatRuns: LoadResult[] = [];
    healthRuns.push(await run.health(half));
    beatRuns.push(await run.heartbeat(half));
    beatRuns.push(await run.heartbeat(half));
    healthRuns.push(await run.health(half));
    return { agents: count, health: combine(healthRuns), heartbeat: combine(beatRuns) };
  } finally {
    await pool.close();
    await platform.close();
  }
}

async function main(): Promise<void> {
  if (AGENTS.length === 0) throw new Error("BENCH_AGENTS lists no agent count");
  const atStart = machine();
  const rows: Row[] = [];
  for (const count of AGENTS) {
    rows.push(await measure(count));
    const row = rows.at(-1) as Row;
    console.error(
      `${count} agents: health ${rps(row.health).toFixed(0)} rps, heartbeat ${rps(row.heartbeat).toFixed(0)} rps`,
    );
  }

  console.log(`\nstart: ${atStart}\nend:   ${machine()}`);
  console.log(
    `\nheartbeats, one platform process on PostgreSQL, ${CONCURRENCY} in flight, ${DURATION_MS / 1000} s per kind per agent count (ms)`,
  );
  console.log(
    `${"request".padEnd(24)}${"agents".padStart(7)}${"requests".padStart(10)}${"rps".padStart(9)}${"p50".padStart(8)}${"p99".padStart(8)}${"mean".padStart(8)}  errors`,
  );
  for (const row of rows) {
    for (const [name, result] of [
      ["GET /health", row.health],
      ["POST /registry/heartbeat", row.heartbeat],
    ] as const) {
      const s = summarize(result.latencies);
      console.log(
        `${name.padEnd(24)}${String(row.agents).padStart(7)}${String(result.requests).padStart(10)}${num(rps(result), 9, 0)}${num(s.p50)}${num(s.p99)}${num(s.mean)}  ${errorText(result.errors)}`,
      );
    }
  }
  for (const row of rows) {
    const hb = summarize(row.heartbeat.latencies);
    const base = summarize(row.health.latencies);
    console.log(
      `${row.agents} agents: ratio heartbeat/health throughput ${(rps(row.heartbeat) / rps(row.health)).toFixed(2)}, p99 heartbeat/health ${(hb.p99 / base.p99).toFixed(2)}`,
    );
  }
}

function rps(result: LoadResult): number {
  return result.requests / (result.elapsedMs / 1000);
}

await runBench(main, {
  hardLimitMs: HARD_LIMIT_MS,
  cleanup: async () => {
    await Promise.all(open.map((platform) => platform.close().catch(() => undefined)));
  },
});

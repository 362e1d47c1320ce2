/**
 * Heartbeats per second the tenant platform sustains on PostgreSQL, with latency percentiles, for 1,000 and 100,000
 * simulated agents, against a bare `node:http` server parsing the same body (bench/bare-heartbeat.ts, no database)
 * measured in the same run; then the same load spread over two platform processes on the one database, for the
 * scaling factor.
 *
 * Per agent count: a fresh database and a fresh platform process (test-support/process.ts, so the load generator
 * does not share its event loop); that many workspace rows, already `online`, each with its own bearer token
 * written straight into the database in bulk (hashed as registration stores it; registering 100,000 agents over the
 * API would take longer than the measurement). The load generator is this process: an undici Pool per server with
 * keep-alive and a fixed number of requests in flight, agents taken round-robin so each heartbeats in turn with its
 * own token. Every heartbeat is a full authenticated `POST /registry/heartbeat`; a non-200 answer (or an `ok`
 * missing from it) counts as an error.
 *
 * The first pass over all agents is measured on its own ("first beats"): it is what a replica does after a start
 * (nothing in memory yet), not the steady state. Then the bare server and the platform alternate in ABBA halves so
 * machine noise hits both. Two replicas: a second platform process on the same database, the in-flight requests
 * split evenly between the two (as a TCP load balancer spreads connections); the load generator stays one process,
 * and the machine has 2 cores for the generator, both replicas and PostgreSQL, so the factor shows what contention
 * leaves, not what two machines would give.
 * The platform logs at its default level (info), as it does in production: one line per request, except successful
 * heartbeats, which are logged at debug.
 *
 *   pnpm exec tsx bench/heartbeats.ts
 *   BENCH_AGENTS=1000,100000  BENCH_DURATION_S=10 (per kind and agent count)  BENCH_CONCURRENCY=128
 *   BENCH_REPLICAS=1,2 (1: skip the two-replica run)
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { Pool } from "undici";
import { type PlatformProcess, REPO_ROOT, startPlatformProcess } from "../test-support/process.ts";
import {
  BENCH_RATE_LIMITS,
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

const AGENTS = (process.env.BENCH_AGENTS ?? "1000,100000")
  .split(",")
  .map(Number)
  .filter((n) => Number.isInteger(n) && n > 0);
const REPLICAS = (process.env.BENCH_REPLICAS ?? "1,2").split(",").map(Number);
const DURATION_MS = envNumber("BENCH_DURATION_S", 10) * 1000;
const CONCURRENCY = Math.round(envNumber("BENCH_CONCURRENCY", 128));
const WARMUP_MS = 2_000;
const HARD_LIMIT_MS = AGENTS.reduce((sum, n) => sum + 4 * DURATION_MS + 120_000 + n * 3, 60_000);

const open: BenchPlatform[] = [];
const children: ChildProcess[] = [];
const replicas: PlatformProcess[] = [];

interface Row {
  agents: number;
  first: LoadResult;
  bare: LoadResult;
  one: LoadResult;
  two: LoadResult | null;
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

/** Round-robin over the agents, the i-th request going to `pools[i % pools.length]`. */
function beater(pools: Pool[], agents: SeededWorkspace[]) {
  let turn = 0;
  return () => {
    const i = turn++;
    return heartbeat(pools[i % pools.length] as Pool, agents[i % agents.length] as SeededWorkspace);
  };
}

/** bench/bare-heartbeat.ts as its own process; resolves with its URL once it listens. */
async function startBare(): Promise<string> {
  const child = spawn(process.execPath, ["--import", "tsx", join(REPO_ROOT, "bench/bare-heartbeat.ts")], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? "" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  let seen = "";
  for await (const chunk of child.stdout) {
    seen += String(chunk);
    const port = /listening (\d+)/.exec(seen)?.[1];
    if (port) return `http://127.0.0.1:${port}`;
  }
  throw new Error(`the bare server exited before listening: ${seen}`);
}

const pool = (url: string, connections: number) => new Pool(url, { connections, pipelining: 1 });

async function measure(count: number, bareUrl: string): Promise<Row> {
  const platform = await startBenchPlatform();
  open.push(platform);
  const seeding = performance.now();
  const agents = await seedWorkspaces(platform, count, { status: "online", withTokens: true });
  console.error(`${count} agents written in ${(performance.now() - seeding).toFixed(0)} ms`);

  const pools: Pool[] = [];
  try {
    const bare = pool(bareUrl, CONCURRENCY);
    const one = pool(platform.process.url, CONCURRENCY);
    pools.push(bare, one);
    const run = (send: () => Promise<string | undefined>, durationMs: number) =>
      drive({ concurrency: CONCURRENCY, durationMs, send });
    const onBare = beater([bare], agents);
    const onOne = beater([one], agents);

    const firstBeat = await onOne();
    if (firstBeat) throw new Error(`the first heartbeat failed: ${firstBeat}`);
    const first = await drive({ concurrency: CONCURRENCY, count: count, send: onOne });
    console.error(`${count} agents: first beats ${rps(first).toFixed(0)}/s`);
    await run(onBare, WARMUP_MS / 2);
    await run(onOne, WARMUP_MS);

    const half = DURATION_MS / 2;
    const bareRuns = [await run(onBare, half)];
    const oneRuns = [await run(onOne, half), await run(onOne, half)];
    bareRuns.push(await run(onBare, half));

    let two: LoadResult | null = null;
    if (REPLICAS.includes(2)) {
      const second = await startPlatformProcess({
        env: {
          DATABASE_URL: platform.database.url,
          CONTAINER_BACKEND: "docker",
          STATUS_SWEEP_INTERVAL: "3600",
          ...BENCH_RATE_LIMITS,
        },
      });
      replicas.push(second);
      const a = pool(platform.process.url, CONCURRENCY / 2);
      const b = pool(second.url, CONCURRENCY / 2);
      pools.push(a, b);
      const onTwo = beater([a, b], agents);
      // The second replica starts with nothing in memory: a pass over all agents before measuring (with an even
      // count, agent k always goes to replica k % 2, as an agent's keep-alive connection stays on one replica).
      await drive({ concurrency: CONCURRENCY, count, send: onTwo });
      await run(onTwo, WARMUP_MS);
      const twoRuns = [await run(onTwo, half)];
      const oneAgain = [await run(onOne, half)];
      twoRuns.push(await run(onTwo, half));
      oneRuns.push(...oneAgain);
      two = combine(twoRuns);
      await second.kill("SIGTERM");
    }
    return { agents: count, first, bare: combine(bareRuns), one: combine(oneRuns), two };
  } finally {
    await Promise.all(pools.map((p) => p.close()));
    await platform.close();
  }
}

async function main(): Promise<void> {
  if (AGENTS.length === 0) throw new Error("BENCH_AGENTS lists no agent count");
  const atStart = machine();
  const bareUrl = await startBare();
  const rows: Row[] = [];
  for (const count of AGENTS) {
    rows.push(await measure(count, bareUrl));
    const row = rows.at(-1) as Row;
    console.error(
      `${count} agents: bare ${rps(row.bare).toFixed(0)}/s, platform ${rps(row.one).toFixed(0)}/s${row.two ? `, two replicas ${rps(row.two).toFixed(0)}/s` : ""}`,
    );
  }

  console.log(`\nstart: ${atStart}\nend:   ${machine()}`);
  console.log(
    `\nheartbeats on PostgreSQL, ${CONCURRENCY} in flight, ${DURATION_MS / 1000} s per kind per agent count (ms); load generator: this one process`,
  );
  console.log(
    `${"server".padEnd(30)}${"agents".padStart(7)}${"requests".padStart(10)}${"rps".padStart(9)}${"p50".padStart(8)}${"p99".padStart(8)}${"mean".padStart(8)}  errors`,
  );
  for (const row of rows) {
    for (const [name, result] of [
      ["bare node:http", row.bare],
      ["platform, first beats", row.first],
      ["platform, 1 replica", row.one],
      ["platform, 2 replicas", row.two],
    ] as const) {
      if (!result) continue;
      const s = summarize(result.latencies);
      console.log(
        `${name.padEnd(30)}${String(row.agents).padStart(7)}${String(result.requests).padStart(10)}${num(rps(result), 9, 0)}${num(s.p50)}${num(s.p99)}${num(s.mean)}  ${errorText(result.errors)}`,
      );
    }
  }
  for (const row of rows) {
    const scaling = row.two ? `, 2 replicas/1 replica ${(rps(row.two) / rps(row.one)).toFixed(2)}` : "";
    console.log(
      `${row.agents} agents: platform/bare throughput ${(rps(row.one) / rps(row.bare)).toFixed(3)}, first beats/bare ${(rps(row.first) / rps(row.bare)).toFixed(3)}${scaling}`,
    );
  }
}

function rps(result: LoadResult): number {
  return result.requests / (result.elapsedMs / 1000);
}

await runBench(main, {
  hardLimitMs: HARD_LIMIT_MS,
  cleanup: async () => {
    await Promise.all(replicas.map((replica) => replica.kill("SIGTERM").catch(() => undefined)));
    await Promise.all(open.map((platform) => platform.close().catch(() => undefined)));
    for (const child of children) child.kill("SIGTERM");
  },
});

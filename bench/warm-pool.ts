/**
 * Claim → online from a warm pool against a cold provision of the same image and tier, in the same run, on the real
 * Docker engine, with where the time of each claim goes.
 *
 * The pool of echo/tier 2 is set to P members. First W warm-up claims (the first requests after start: connections,
 * JIT), reported apart. Then N claims at rest, one at a time, each once the pool is full again (no container is being
 * started beside it; the refill is not counted); then B claims back to back, P at a time, while the filler starts
 * replacements beside them, as under a burst; then the pool is drained and C creates provision cold. Claimed
 * workspaces are deleted, untimed, every P claims. Every create is `POST /workspaces` over HTTP, timed to the
 * platform's `online` status event; its answer is timed apart. The platform runs in this process, on PostgreSQL with
 * its events shared through the database as `main()` shares them (so an event reaches subscribers after a NOTIFY).
 *
 * Steps of each claim (ms from the POST's start): the claim committed (its `awaiting_agent` event published), the
 * POST answered, the member's waiting `POST /registry/claim` answered, the agent's `pool_claimed` log line (its clock
 * is this machine's; 1 ms resolution), its `POST /registry/register` arriving, `online` published by the platform and
 * `online` received by subscribers; with the garbage collection and the worst event loop delay of this process
 * during the claim. Prints p50/p90/p99/max/mean of each, each step's share, and the slowest claims step by step.
 * Loopback only; a fresh PostgreSQL database; everything labelled with the bench's deployment is removed at the end
 * (and on error). Builds `molecule/workspace-echo:$WORKSPACE_IMAGE_TAG` from this checkout first (a hash check when
 * unchanged), so the agent measured is this checkout's.
 *
 *   pnpm exec tsx bench/warm-pool.ts
 *     BENCH_CLAIMS (at rest, default 100), BENCH_BUSY_CLAIMS (default 20), BENCH_COLD (default 8),
 *     BENCH_WARMUP (default 3), BENCH_POOL_SIZE (default 5), BENCH_SLOWEST (claims shown step by step, default 5),
 *     BENCH_OUT (a file for every create's steps as JSON, to pool runs)
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks";
import { createDockerProvisioner } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import { PLATFORM_EVENT_SHARING } from "../apps/tenant-platform/src/services/events.ts";
import { ensureTemplate } from "../test-support/pg.ts";
import { ADMIN_TOKEN, createTestPlatform, type TestPlatform } from "../test-support/platform.ts";
import { waitFor } from "../test-support/wait.ts";
import { envNumber, machine, num, runBench } from "./lib.ts";

const CLAIMS = envNumber("BENCH_CLAIMS", 100);
const BUSY_CLAIMS = envNumber("BENCH_BUSY_CLAIMS", 20);
const COLD = envNumber("BENCH_COLD", 8);
const WARMUP = envNumber("BENCH_WARMUP", 3);
const POOL_SIZE = envNumber("BENCH_POOL_SIZE", 5);
const SLOWEST = envNumber("BENCH_SLOWEST", 5);
const IMAGE_TAG = process.env.WORKSPACE_IMAGE_TAG ?? "latest";
const IMAGE = { prefix: "molecule/workspace-", tag: IMAGE_TAG };

const docker = new Dockerode();
const deployment = `bench-pool-${randomBytes(4).toString("hex")}`;
const label = `molecule.deployment=${deployment}`;

async function cleanup(): Promise<void> {
  const filters = JSON.stringify({ label: [label] });
  for (const container of await docker.listContainers({ all: true, filters })) {
    await docker
      .getContainer(container.Id)
      .remove({ force: true })
      .catch(() => {});
  }
  for (const volume of (await docker.listVolumes({ filters })).Volumes ?? []) {
    await docker
      .getVolume(volume.Name)
      .remove({ force: true })
      .catch(() => {});
  }
}

/** Records, per workspace id, when each step of a claim happened in this process (performance.now()). */
class StepClock {
  readonly committed = new Map<string, number>();
  readonly onlinePublished = new Map<string, number>();
  readonly claimAnswered = new Map<string, number>();
  readonly registerArrived = new Map<string, number>();
  private readonly online = new Map<string, number>();
  private readonly waiting = new Map<string, (at: number) => void>();
  /** How often the bus lost events (printed: a create timed across one is timed to its publish). */
  gaps = 0;
  closed = false;

  constructor(platform: TestPlatform) {
    const { events } = platform.deps;
    // Published: the platform's own moment (after its commit); subscribed: what a client of the events sees.
    events.watchPublished((event) => {
      if (event.type !== "workspace.status" || !event.workspaceId) return;
      if (event.data.to === "awaiting_agent") this.committed.set(event.workspaceId, performance.now());
      if (event.data.to === "online") this.onlinePublished.set(event.workspaceId, performance.now());
    });
    const subscribe = () =>
      events.subscribe(
        {},
        (event) => {
          if (event.type !== "workspace.status" || event.data.to !== "online" || !event.workspaceId) return;
          const at = performance.now();
          this.online.set(event.workspaceId, at);
          this.waiting.get(event.workspaceId)?.(at);
        },
        undefined,
        () => {
          // The bus lost events (its LISTEN connection came back): a create waiting now is timed to its publish.
          this.gaps++;
          for (const [id, resolve] of this.waiting) {
            const published = this.onlinePublished.get(id);
            if (published !== undefined) resolve(published);
          }
          if (!this.closed) subscribe();
        },
      );
    subscribe();
    // The agent's two calls, as they reach the platform's HTTP handler (the raw routes in front are not these).
    const handle = platform.app.fetch;
    platform.app.fetch = async (request, ...rest) => {
      const path = new URL(request.url).pathname;
      const step =
        request.method !== "POST"
          ? null
          : path === "/registry/claim"
            ? this.claimAnswered
            : path === "/registry/register"
              ? this.registerArrived
              : null;
      if (!step) return handle(request, ...rest);
      const arrived = performance.now();
      const id = request
        .clone()
        .json()
        .then((body: unknown) => (body as { id?: string }).id)
        .catch(() => undefined);
      const response = await handle(request, ...rest);
      const answered = performance.now();
      void id.then((workspaceId) => {
        if (workspaceId) step.set(workspaceId, step === this.claimAnswered ? answered : arrived);
      });
      return response;
    };
  }

  onlineAt(id: string): Promise<number> {
    const seen = this.online.get(id);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const published = this.onlinePublished.has(id) ? "published, never received" : "never published";
        reject(
          new Error(`workspace ${id} not online within 60 s (online ${published}; ${this.gaps} bus gaps)`),
        );
      }, 60_000);
      this.waiting.set(id, (at) => {
        clearTimeout(timer);
        this.waiting.delete(id);
        resolve(at);
      });
    });
  }
}

/** Garbage collection of this process (the platform's), by start time. */
class GcLog {
  private readonly pauses: { start: number; ms: number }[] = [];
  private readonly observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) this.pauses.push({ start: entry.startTime, ms: entry.duration });
  });

  constructor() {
    this.observer.observe({ entryTypes: ["gc"] });
  }

  within(from: number, to: number): number {
    return this.pauses
      .filter((p) => p.start + p.ms >= from && p.start <= to)
      .reduce((sum, p) => sum + p.ms, 0);
  }

  stop(): void {
    this.observer.disconnect();
  }
}

const STEPS = [
  ["POST → claim committed", "committed"],
  ["committed → claim wait answered", "claimAnswered"],
  ["→ agent has its claim", "agentClaimed"],
  ["→ its registration arrives", "registerArrived"],
  ["→ online published", "onlinePublished"],
  ["→ online received (NOTIFY)", "online"],
] as const;
type StepName = (typeof STEPS)[number][1];

interface Timed {
  id: string;
  claimed: boolean;
  answeredMs: number;
  onlineMs: number;
  /** Each step's time from the POST's start; missing when it could not be seen. */
  at: Partial<Record<StepName, number>>;
  gcMs: number;
  loopDelayMaxMs: number;
}

const delay = monitorEventLoopDelay({ resolution: 5 });

/** The agent's own log lines of its claim, on this process's clock. */
async function agentClaimedAt(id: string): Promise<number | undefined> {
  const filters = JSON.stringify({ label: [`molecule.workspace_id=${id}`] });
  const [container] = await docker.listContainers({ all: true, filters });
  if (!container) return undefined;
  const raw = (await docker.getContainer(container.Id).logs({ stdout: true, follow: false })) as Buffer;
  // Without a TTY the log is framed: 8 bytes (stream, 3 zero, size) before each chunk.
  let text = "";
  for (let offset = 0; offset + 8 <= raw.length; ) {
    const size = raw.readUInt32BE(offset + 4);
    text += raw.subarray(offset + 8, offset + 8 + size).toString("utf8");
    offset += 8 + size;
  }
  for (const line of text.split("\n")) {
    if (!line.includes('"pool_claimed"')) continue;
    const time = Date.parse((JSON.parse(line) as { time: string }).time);
    return time - performance.timeOrigin;
  }
  return undefined;
}

async function create(platform: TestPlatform, url: string, steps: StepClock, gc: GcLog, name: string) {
  delay.reset();
  const started = performance.now();
  const response = await fetch(`${url}/workspaces`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ name, runtime: "echo", tier: 2 }),
  });
  const body = (await response.json()) as { workspace: { id: string; status: string } };
  const answeredMs = performance.now() - started;
  if (response.status !== 202) throw new Error(`POST /workspaces answered ${response.status}`);
  const id = body.workspace.id;
  const onlineAt = await steps.onlineAt(id);
  const loopDelayMaxMs = delay.max / 1e6;
  // A claim answers `awaiting_agent`, or `online` when its agent registered before the answer was read; cold is
  // `provisioning`.
  const claimed = body.workspace.status !== "provisioning";
  const since = (at: number | undefined) => (at === undefined || at < started ? undefined : at - started);
  const at: Timed["at"] = {
    committed: since(steps.committed.get(id)),
    claimAnswered: since(steps.claimAnswered.get(id)),
    agentClaimed: claimed ? since(await agentClaimedAt(id)) : undefined,
    registerArrived: since(steps.registerArrived.get(id)),
    onlinePublished: since(steps.onlinePublished.get(id)),
    online: onlineAt - started,
  };
  platform.logs.length = 0; // the test logger keeps every line in memory
  return {
    id,
    claimed,
    answeredMs,
    onlineMs: onlineAt - started,
    at,
    gcMs: gc.within(started, onlineAt),
    loopDelayMaxMs,
  } satisfies Timed;
}

async function pool(platform: TestPlatform) {
  const { body } = await platform.call("GET", "/pools");
  return body.pools.find((p: { runtime: string; tier: number }) => p.runtime === "echo" && p.tier === 2);
}

async function setPool(platform: TestPlatform, size: number): Promise<void> {
  const put = await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size } });
  if (put.status !== 200) throw new Error(`PUT /pools answered ${put.status}`);
  await poolFull(platform, size);
}

async function poolFull(platform: TestPlatform, size: number): Promise<void> {
  await waitFor(
    `the pool to have ${size} ready members`,
    async () => {
      const now = await pool(platform);
      return now?.ready === size && now.starting === 0 ? true : undefined;
    },
    180_000,
    50,
  );
}

async function removeAll(platform: TestPlatform, ids: string[]): Promise<void> {
  await Promise.all(ids.map((id) => platform.call("DELETE", `/workspaces/${id}`)));
  await waitFor(
    "the workspaces to be removed",
    async () => {
      const { body } = await platform.call("GET", "/workspaces");
      return body.workspaces.length === 0 ? true : undefined;
    },
    120_000,
  );
}

interface Stats {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

function stats(values: number[]): Stats {
  const sorted = Float64Array.from(values).sort();
  const rank = (p: number) =>
    sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
  const mean = sorted.reduce((sum, v) => sum + v, 0) / sorted.length;
  return { p50: rank(50), p90: rank(90), p99: rank(99), max: sorted.at(-1) ?? NaN, mean };
}

const HEAD = `${"".padEnd(36)}      p50      p90      p99      max     mean`;
const row = (name: string, s: Stats) =>
  `${name.padEnd(36)}${num(s.p50, 9, 1)}${num(s.p90, 9, 1)}${num(s.p99, 9, 1)}${num(s.max, 9, 1)}${num(s.mean, 9, 1)}`;

/** Each step's duration (from the step before it that was seen), in order. */
function durations(t: Timed): [string, number | undefined][] {
  let before = 0;
  return STEPS.map(([name, key]) => {
    const at = t.at[key];
    if (at === undefined) return [name, undefined];
    const took = at - before;
    before = at;
    return [name, took];
  });
}

function printSteps(claims: Timed[]): void {
  console.log(`\nwhere the time of a claim at rest goes (ms; each step from the one before)`);
  console.log(HEAD);
  console.log(row("POST answered (beside the steps)", stats(claims.map((t) => t.answeredMs))));
  const all = claims.map(durations);
  STEPS.forEach(([name], i) => {
    const seen = all.map((d) => d[i]?.[1]).filter((v): v is number => v !== undefined);
    if (seen.length > 0) console.log(row(`  ${name}`, stats(seen)));
  });
  console.log(row("  GC in this process during it", stats(claims.map((t) => t.gcMs))));
  console.log(row("  worst event loop delay", stats(claims.map((t) => t.loopDelayMaxMs))));
  const slowest = [...claims].sort((a, b) => b.onlineMs - a.onlineMs).slice(0, SLOWEST);
  console.log(`\nthe ${slowest.length} slowest claims at rest, step by step (ms)`);
  for (const t of slowest) {
    const parts = durations(t).map(([name, ms]) => `${name.replace(/^→ /, "")} ${ms?.toFixed(1) ?? "?"}`);
    console.log(
      `  ${t.onlineMs.toFixed(1).padStart(7)}: ${parts.join(", ")}; POST answered ${t.answeredMs.toFixed(1)}; GC ${t.gcMs.toFixed(1)}, loop delay ${t.loopDelayMaxMs.toFixed(1)}`,
    );
  }
}

async function main(): Promise<void> {
  execFileSync("bash", ["infra/build-workspace-image.sh"], { stdio: ["ignore", "ignore", "inherit"] });
  await ensureTemplate();
  const provisioner = createDockerProvisioner({
    deployment,
    imagePrefix: IMAGE.prefix,
    imageTag: IMAGE.tag,
    network: "host",
  });
  const platform = await createTestPlatform(
    provisioner,
    {
      deployment,
      workspaceImage: IMAGE,
      workspaceEnv: { AGENT_PORT: "0", HEARTBEAT_INTERVAL_MS: "1000" },
    },
    { sweepIntervalMs: 1_000 },
  );
  await platform.deps.events.share({
    db: platform.database.db,
    listen: platform.database.listen,
    logger: platform.deps.logger,
    ...PLATFORM_EVENT_SHARING,
  });
  const loadAtStart = machine();
  const gc = new GcLog();
  const steps = new StepClock(platform);
  delay.enable();
  try {
    const url = await platform.listen();
    await setPool(platform, POOL_SIZE);

    // One at a time, each with the pool full; the claimed workspaces are removed (untimed) every pool's worth.
    const atRest = async (n: number, prefix: string): Promise<Timed[]> => {
      const timed: Timed[] = [];
      let made: string[] = [];
      for (let i = 0; i < n; i++) {
        await poolFull(platform, POOL_SIZE);
        const t = await create(platform, url, steps, gc, `${prefix}-${i}`);
        made.push(t.id);
        timed.push(t);
        if (made.length === POOL_SIZE || i === n - 1) {
          await removeAll(platform, made);
          made = [];
          console.error(`${prefix}: ${i + 1}/${n}, last → online ${t.onlineMs.toFixed(1)} ms`);
        }
      }
      return timed;
    };
    const warmup = await atRest(WARMUP, "warm-up");
    const claims = await atRest(CLAIMS, "claim");

    const busyClaims: Timed[] = [];
    const colds: Timed[] = [];
    while (busyClaims.length < BUSY_CLAIMS) {
      await poolFull(platform, POOL_SIZE);
      const made: string[] = [];
      for (let i = 0; i < POOL_SIZE && busyClaims.length < BUSY_CLAIMS; i++) {
        const t = await create(platform, url, steps, gc, `busy-${busyClaims.length}`);
        made.push(t.id);
        // A create that found no ready member (the refill has not caught up) is not a claim: counted as cold.
        (t.claimed ? busyClaims : colds).push(t);
      }
      await removeAll(platform, made);
    }
    console.error(`back to back: ${busyClaims.length} claims (${colds.length} found the pool empty)`);

    await setPool(platform, 0);
    const made: string[] = [];
    for (let i = 0; i < COLD; i++) {
      const t = await create(platform, url, steps, gc, `cold-${i}`);
      if (t.claimed) throw new Error("a create claimed from a drained pool");
      made.push(t.id);
      colds.push(t);
    }
    await removeAll(platform, made);
    if (claims.some((t) => !t.claimed) || warmup.some((t) => !t.claimed)) {
      throw new Error("a create at rest found no ready member");
    }

    const claimOnline = stats(claims.map((t) => t.onlineMs));
    const coldOnline = stats(colds.map((t) => t.onlineMs));
    console.log(
      `\nwarm-pool, molecule/workspace-echo:${IMAGE_TAG}, tier 2, docker (host network), pool of ${POOL_SIZE}`,
    );
    console.log(`${loadAtStart} at start; ${machine()} at end`);
    console.log(
      `warm-up N=${warmup.length}, claims at rest N=${claims.length}, back to back N=${busyClaims.length}, cold N=${colds.length} (ms)`,
    );
    console.log(
      `warm-up (first claims after start), → online: ${warmup.map((t) => t.onlineMs.toFixed(1)).join(", ")}; POST answered: ${warmup.map((t) => t.answeredMs.toFixed(1)).join(", ")}`,
    );
    console.log(HEAD);
    console.log(row("claim at rest: POST answered", stats(claims.map((t) => t.answeredMs))));
    console.log(row("claim at rest: POST → online", claimOnline));
    console.log(row("claim while refilling: → online", stats(busyClaims.map((t) => t.onlineMs))));
    console.log(row("cold: POST answered", stats(colds.map((t) => t.answeredMs))));
    console.log(row("cold: POST → online", coldOnline));
    console.log(
      `cold/claim at rest: p50 ${(coldOnline.p50 / claimOnline.p50).toFixed(1)}×, p99 ${(coldOnline.p99 / claimOnline.p99).toFixed(1)}×`,
    );
    const under = claims.filter((t) => t.onlineMs < 100).length;
    console.log(`claims at rest online within 100 ms: ${under}/${claims.length}`);
    printSteps(claims);
    if (steps.gaps > 0)
      console.log(`the event bus lost events ${steps.gaps} times (creates then timed to the publish)`);
    if (process.env.BENCH_OUT) {
      writeFileSync(process.env.BENCH_OUT, JSON.stringify({ warmup, claims, busyClaims, colds }));
      console.log(`every create's steps written to ${process.env.BENCH_OUT}`);
    }
  } finally {
    steps.closed = true;
    delay.disable();
    gc.stop();
    await platform.close().catch((error) => console.error(`closing the platform: ${String(error)}`));
  }
}

await runBench(main, { hardLimitMs: 20 * 60_000, cleanup });

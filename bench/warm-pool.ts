/**
 * Claim → online from a warm pool against a cold provision of the same image and tier, in the same run, on the real
 * Docker engine. Each round sets the pool of echo/tier 2 to P members and waits for them to be ready, then times P
 * creates one after another, each claiming a member: the first half at rest (the pool refilled before each claim),
 * the second back to back while the filler starts replacements beside them, as it would under a burst; then it
 * drains the pool (size 0), waits for it to be empty, and times C creates that provision cold. Every create is timed
 * from `POST /workspaces` to the platform's `online` status event (exact, not polled); the answer of the POST is timed
 * too. The round's workspaces are deleted untimed. Prints p50/p99/mean of each, and the ratio of the medians.
 * Loopback only; a fresh PostgreSQL database; everything labelled with the bench's deployment is removed at the end
 * (and on error). Builds `molecule/workspace-echo:$WORKSPACE_IMAGE_TAG` from this checkout first (a hash check when
 * unchanged), so the agent measured is this checkout's.
 *
 *   pnpm exec tsx bench/warm-pool.ts      (BENCH_ROUNDS default 4, BENCH_POOL_SIZE default 10, BENCH_COLD default 4)
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createDockerProvisioner } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import { ensureTemplate } from "../test-support/pg.ts";
import { createTestPlatform, type TestPlatform } from "../test-support/platform.ts";
import { waitFor } from "../test-support/wait.ts";
import { envNumber, machine, num, runBench, type Summary, summarize } from "./lib.ts";

const ROUNDS = envNumber("BENCH_ROUNDS", 4);
const POOL_SIZE = envNumber("BENCH_POOL_SIZE", 10);
const COLD = envNumber("BENCH_COLD", 4);
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

/** Resolves with the time the platform published `online` for each workspace id it is asked about. */
class OnlineEvents {
  private readonly seen = new Map<string, number>();
  private readonly waiting = new Map<string, (at: number) => void>();

  constructor(platform: TestPlatform) {
    platform.deps.events.subscribe({}, (event) => {
      if (event.type !== "workspace.status" || event.data.to !== "online" || !event.workspaceId) return;
      const at = performance.now();
      this.seen.set(event.workspaceId, at);
      this.waiting.get(event.workspaceId)?.(at);
    });
  }

  at(id: string): Promise<number> {
    const seen = this.seen.get(id);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`workspace ${id} not online within 60 s`)), 60_000);
      this.waiting.set(id, (at) => {
        clearTimeout(timer);
        resolve(at);
      });
    });
  }
}

interface Timed {
  answeredMs: number;
  onlineMs: number;
  id: string;
  claimed: boolean;
}

async function create(platform: TestPlatform, online: OnlineEvents, name: string): Promise<Timed> {
  const started = performance.now();
  const answer = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo", tier: 2 } });
  const answeredMs = performance.now() - started;
  if (answer.status !== 202) throw new Error(`POST /workspaces answered ${answer.status}`);
  const id: string = answer.body.workspace.id;
  const onlineAt = await online.at(id);
  return {
    answeredMs,
    onlineMs: onlineAt - started,
    id,
    claimed: answer.body.workspace.status === "awaiting_agent",
  };
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
  );
}

async function removeAll(platform: TestPlatform, ids: string[]): Promise<void> {
  await Promise.all(ids.map((id) => platform.call("DELETE", `/workspaces/${id}`)));
  await waitFor(
    "the round's workspaces to be removed",
    async () => {
      const { body } = await platform.call("GET", "/workspaces");
      return body.workspaces.length === 0 ? true : undefined;
    },
    120_000,
  );
}

const row = (name: string, s: Summary) =>
  `${name.padEnd(34)}${num(s.p50, 9, 1)}${num(s.p99, 9, 1)}${num(s.mean, 9, 1)}`;

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
  const loadAtStart = machine();
  try {
    await platform.listen();
    const online = new OnlineEvents(platform);
    const claims: Timed[] = [];
    const busyClaims: Timed[] = [];
    const colds: Timed[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      await setPool(platform, POOL_SIZE);
      const made: string[] = [];
      for (let i = 0; i < POOL_SIZE; i++) {
        // The first half at rest (the pool refilled before each claim), the second back to back while it refills.
        const atRest = i < POOL_SIZE / 2;
        if (atRest) await poolFull(platform, POOL_SIZE);
        const timed = await create(platform, online, `claim-${round}-${i}`);
        made.push(timed.id);
        // A create that found no ready member (the refill has not caught up) is not a claim: counted as cold.
        if (!timed.claimed) colds.push(timed);
        else (atRest ? claims : busyClaims).push(timed);
      }
      await setPool(platform, 0);
      for (let i = 0; i < COLD; i++) {
        const timed = await create(platform, online, `cold-${round}-${i}`);
        if (timed.claimed) throw new Error("a create claimed from a drained pool");
        made.push(timed.id);
        colds.push(timed);
      }
      await removeAll(platform, made);
      console.error(
        `round ${round}: ${claims.length} claims, ${colds.length} cold so far; last claim → online ${claims.at(-1)?.onlineMs.toFixed(1)} ms, last cold ${colds.at(-1)?.onlineMs.toFixed(1)} ms`,
      );
    }
    if (claims.length === 0 || colds.length === 0) throw new Error("no claims or no cold creates were timed");
    const claimOnline = summarize(claims.map((t) => t.onlineMs));
    const coldOnline = summarize(colds.map((t) => t.onlineMs));
    console.log(`\nwarm-pool, molecule/workspace-echo:${IMAGE_TAG}, tier 2, docker (host network)`);
    console.log(`${loadAtStart} at start; ${machine()} at end`);
    console.log(
      `claims at rest N=${claims.length}, back to back N=${busyClaims.length} (pool of ${POOL_SIZE}, ${ROUNDS} rounds), cold N=${colds.length} (ms)`,
    );
    console.log(`${"".padEnd(34)}      p50      p99     mean`);
    console.log(row("claim at rest: POST answered", summarize(claims.map((t) => t.answeredMs))));
    console.log(row("claim at rest: POST → online", claimOnline));
    if (busyClaims.length > 0) {
      console.log(row("claim while refilling: → online", summarize(busyClaims.map((t) => t.onlineMs))));
    }
    console.log(row("cold: POST answered", summarize(colds.map((t) => t.answeredMs))));
    console.log(row("cold: POST → online", coldOnline));
    console.log(`cold/claim at rest (p50): ${(coldOnline.p50 / claimOnline.p50).toFixed(1)}×`);
    console.log(`cold/claim at rest (p99): ${(coldOnline.p99 / claimOnline.p99).toFixed(1)}×`);
  } finally {
    await platform.close().catch((error) => console.error(`closing the platform: ${String(error)}`));
  }
}

await runBench(main, { hardLimitMs: 15 * 60_000, cleanup });

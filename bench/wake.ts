/**
 * Wake → first answer: an A2A `message/send` through the platform's proxy to a suspended workspace until the answer
 * arrives, against a raw resume of the same container or machine straight through its backend's API until its agent
 * answers the same message sent straight to it (with its inbound token), measured in the same run, interleaved, the
 * order alternating. Both wake from the same state: the workspace suspended through the platform
 * (`POST /workspaces/:id/suspend`). After a raw resume the platform is told with `POST /start` (not timed; it finds
 * the container or machine running). Prints median/min/max of both, the ratio of the medians, the median added
 * milliseconds, and the median of the start operation's steps and of the phases of a platform wake.
 *
 * - `docker` (the default): the real Docker engine; suspended is a paused container, the raw resume a `docker
 *   unpause` (Engine API). The container stays paused PAUSED_MS so the agent's heartbeat is due when it thaws (as
 *   after any real idle time). The echo image on the host network, agents heartbeating every second, built from this
 *   checkout first (a hash check when unchanged).
 * - `flyio`: the Fly emulator (packages/fly-emulator) with an injected resume time (BENCH_FLY_RESUME_MS, default
 *   300); suspended is a suspended machine, the raw resume one `POST /machines/{id}/start` (what resumes a suspended
 *   machine on Fly) without the platform's lease. The machine runs no code: its agent is an SDK server in this
 *   process (test-support/hand-agents.ts) that answers only while the emulator has its machine `started`, and
 *   heartbeats as soon as it is started again (as a resumed agent whose heartbeat is due) and every second after.
 *
 * The platform runs in this process (as the tests run it) on a fresh PostgreSQL database. Everything the bench made
 * is removed at the end (and on error).
 *
 *   pnpm exec tsx bench/wake.ts [N] [docker|flyio]      (default N=9, docker; WORKSPACE_IMAGE_TAG as the tests read it)
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { INBOUND_TOKEN_HEADER } from "@molecule/contracts";
import { workspaces } from "@molecule/db";
import { createDockerProvisioner, type FlyHandle, resourceName } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import { eq } from "drizzle-orm";
import { openInboundToken } from "../apps/tenant-platform/src/services/inbound-token.ts";
import {
  type FlyHarness,
  startFlyHarness,
  TEST_APP,
  TEST_DEPLOYMENT,
} from "../packages/provisioner-core/src/flyio/testkit.ts";
import { removeDeployment } from "../test-support/docker-platform.ts";
import { HandAgents } from "../test-support/hand-agents.ts";
import { ensureTemplate } from "../test-support/pg.ts";
import { createTestPlatform, type TestPlatform } from "../test-support/platform.ts";
import { envNumber, machine, runBench } from "./lib.ts";

const N = Math.max(1, Number(process.argv[2] ?? 9) || 9);
const BACKEND = process.argv[3] ?? "docker";
const IMAGE_TAG = process.env.WORKSPACE_IMAGE_TAG ?? "latest";
const FLY_RESUME_MS = envNumber("BENCH_FLY_RESUME_MS", 300);
const POLL_MS = 5;
const STEP_TIMEOUT_MS = 60_000;
/** How long a paused container stays paused before each wake: past one heartbeat interval (1 s here). */
const PAUSED_MS = 1_500;
/** The agents' heartbeat interval, on both backends. */
const HEARTBEAT_MS = 1_000;

const docker = new Dockerode();
const deployment = `bench-wake-${randomBytes(4).toString("hex")}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until<T>(what: string, probe: () => Promise<T | undefined>, intervalMs = POLL_MS): Promise<T> {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${STEP_TIMEOUT_MS} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

function message(i: number) {
  return {
    jsonrpc: "2.0",
    id: i,
    method: "message/send",
    params: { message: { role: "user", messageId: `m-${i}`, parts: [{ kind: "text", text: `wake ${i}` }] } },
  };
}

function answered(body: unknown, i: number): boolean {
  return JSON.stringify(body).includes(`echo: wake ${i}`);
}

interface Phase {
  name: string;
  durationMs: number;
}

/** What differs between backends: where the platform runs its workspaces, and how they are resumed by hand. */
interface WakeBackend {
  /** The workload, for the heading. */
  subject: string;
  /** The raw path's row in the table. */
  rawLabel: string;
  platform: TestPlatform;
  /** Creates the bench's workspace (never idle-suspended by the platform itself) and brings it online. */
  create(): Promise<string>;
  /** Whether the backend holds it suspended (the container paused, the machine suspended). */
  isSuspended(id: string): Promise<boolean>;
  /** How long it stays suspended before a wake. */
  suspendedMs: number;
  /** The raw resume, straight through the backend's own API. */
  resume(id: string): Promise<void>;
  close(): Promise<void>;
}

async function statusIs(platform: TestPlatform, id: string, status: string): Promise<void> {
  await until(
    `workspace ${id} to be ${status}`,
    async () => ((await platform.call("GET", `/workspaces/${id}`)).body.status === status ? true : undefined),
    20,
  );
}

/** Suspends the workspace through the platform and leaves it suspended for the backend's `suspendedMs`. */
async function suspend(backend: WakeBackend, id: string): Promise<void> {
  const accepted = await backend.platform.call("POST", `/workspaces/${id}/suspend`);
  if (accepted.status !== 202) throw new Error(`suspend answered ${accepted.status}`);
  await statusIs(backend.platform, id, "suspended");
  if (!(await backend.isSuspended(id))) throw new Error("the backend does not hold it suspended");
  await sleep(backend.suspendedMs);
}

/** Wake → first answer through the proxy, with the start operation's steps and when it went online. */
async function viaPlatform(backend: WakeBackend, id: string, i: number) {
  const { platform } = backend;
  await suspend(backend, id);
  let onlineAt = 0;
  const subscription = platform.deps.events.subscribe({ workspaceId: id }, (event) => {
    if (event.type === "workspace.status" && event.data.to === "online") onlineAt = performance.now();
  });
  const started = performance.now();
  const answer = await platform.callServed("POST", `/workspaces/${id}/a2a`, { body: message(i) });
  const totalMs = performance.now() - started;
  subscription.unsubscribe();
  if (answer.status !== 200 || !answered(answer.body, i)) {
    throw new Error(`wake through the platform answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  }
  // Not timed from here on.
  const operations = (await platform.call("GET", `/workspaces/${id}/operations`)).body.operations;
  const start = operations.find((operation: { kind: string }) => operation.kind === "start");
  const steps: Phase[] = (start?.steps ?? []).map((step: { name: string; durationMs: number }) => ({
    name: `  ${step.name}`,
    durationMs: step.durationMs,
  }));
  const phases: Phase[] = onlineAt
    ? [
        { name: "  request → online", durationMs: onlineAt - started },
        { name: "  online → answered", durationMs: started + totalMs - onlineAt },
      ]
    : [];
  return { totalMs, steps, phases };
}

/** Wake → first answer by hand: the backend's raw resume, then the same message straight to the agent until it answers. */
async function raw(backend: WakeBackend, id: string, i: number): Promise<number> {
  const { platform } = backend;
  await suspend(backend, id);
  const [row] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
  if (!row?.url) throw new Error("no agent URL");
  const url = row.url;
  const inbound = openInboundToken(platform.deps.sealer, row);
  const body = JSON.stringify(message(i));
  const started = performance.now();
  await backend.resume(id);
  await until("the agent to answer", async () => {
    const response = await fetch(url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(inbound ? { [INBOUND_TOKEN_HEADER]: inbound } : {}),
      },
      body,
    });
    const text = await response.text();
    return response.status === 200 && answered(text, i) ? true : undefined;
  });
  const totalMs = performance.now() - started;
  // Not timed: the platform learns the container or machine runs again (start finds it running) and sees it online.
  await platform.call("POST", `/workspaces/${id}/start`);
  await statusIs(platform, id, "online");
  return totalMs;
}

/** The real Docker engine: the echo image's agent in a container, paused and unpaused. */
async function dockerBackend(): Promise<WakeBackend> {
  execFileSync("bash", ["infra/build-workspace-image.sh"], { stdio: ["ignore", "ignore", "inherit"] });
  const provisioner = createDockerProvisioner({
    deployment,
    imagePrefix: "molecule/workspace-",
    imageTag: IMAGE_TAG,
    network: "host",
  });
  const platform = await createTestPlatform(
    provisioner,
    { deployment, workspaceEnv: { AGENT_PORT: "0", HEARTBEAT_INTERVAL_MS: String(HEARTBEAT_MS) } },
    { sweepIntervalMs: 1_000 },
  );
  return {
    subject: `docker, molecule/workspace-echo:${IMAGE_TAG}`,
    rawLabel: "docker unpause → agent answers",
    platform,
    suspendedMs: PAUSED_MS,
    async create() {
      const created = await platform.call("POST", "/workspaces", {
        body: { name: "bench-wake", runtime: "echo", idle_suspend_seconds: 0 },
      });
      const id: string = created.body.workspace.id;
      await statusIs(platform, id, "online");
      return id;
    },
    async isSuspended(id) {
      return (await docker.getContainer(resourceName(id)).inspect()).State.Paused;
    },
    async resume(id) {
      await docker.getContainer(resourceName(id)).unpause();
    },
    close: () => platform.close(),
  };
}

/** The Fly emulator: machines suspended and resumed with an injected resume time, their agents in this process. */
async function flyBackend(): Promise<WakeBackend> {
  const fly: FlyHarness = await startFlyHarness({
    realSleep: true,
    emulator: {
      validator: null,
      delays: { bootMs: 1_000, resumeMs: FLY_RESUME_MS, stopMs: 50, suspendMs: 50, destroyMs: 50 },
    },
  });
  const platform = await createTestPlatform(
    fly.provisioner,
    { deployment: TEST_DEPLOYMENT, allowedRuntimes: ["hermes"] },
    { sweepIntervalMs: 1_000 },
  );
  const agents = new HandAgents(platform);
  const stops: Array<() => void> = [];
  const machineOf = async (id: string) => {
    const [row] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
    const machineId = (row?.handle as FlyHandle | null)?.machineId;
    if (!machineId) throw new Error(`workspace ${id} has no machine`);
    return () => fly.emulator.machines(TEST_APP).find((found) => found.id === machineId)?.state;
  };
  return {
    subject: `flyio emulator, injected resume ${FLY_RESUME_MS} ms`,
    rawLabel: "Fly machine start → agent answers",
    platform,
    suspendedMs: 0,
    async create() {
      const created = await platform.call("POST", "/workspaces", {
        body: { name: "bench-wake", runtime: "hermes", tier: 2, idle_suspend_seconds: 0 },
      });
      const id: string = created.body.workspace.id;
      await statusIs(platform, id, "awaiting_agent");
      const state = await machineOf(id);
      // The agent in the machine: it answers only while the machine runs.
      const ws = await agents.register(id, "echo", async () => {
        if (state() !== "started") throw new Error("the machine is not running");
      });
      stops.push(heartbeatWhileStarted(platform, ws, state));
      await statusIs(platform, id, "online");
      return id;
    },
    async isSuspended(id) {
      return (await machineOf(id))() === "suspended";
    },
    async resume(id) {
      const [row] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
      const machineId = (row?.handle as FlyHandle | null)?.machineId;
      const response = await fetch(`${fly.emulator.url}/v1/apps/${TEST_APP}/machines/${machineId}/start`, {
        method: "POST",
        headers: { authorization: `Bearer ${fly.emulator.token}` },
      });
      if (response.status !== 200)
        throw new Error(`Fly start answered ${response.status}: ${await response.text()}`);
    },
    async close() {
      for (const stop of stops) stop();
      await agents.close();
      await platform.close();
      await fly.close();
    },
  };
}

/**
 * The agent's heartbeat loop in a machine that runs no code: a heartbeat as soon as its machine is `started` again
 * (a resumed agent's heartbeat is due), then every HEARTBEAT_MS while it runs, nothing while it is suspended.
 */
function heartbeatWhileStarted(
  platform: TestPlatform,
  ws: { id: string; token: string },
  state: () => string | undefined,
): () => void {
  let stopped = false;
  let lastBeat = 0;
  let wasStarted = true;
  void (async () => {
    while (!stopped) {
      const started = state() === "started";
      if (started && (!wasStarted || performance.now() - lastBeat >= HEARTBEAT_MS)) {
        lastBeat = performance.now();
        await platform
          .callServed("POST", "/registry/heartbeat", { token: ws.token, body: { workspace_id: ws.id } })
          .catch(() => undefined);
      }
      wasStarted = started;
      await sleep(POLL_MS);
    }
  })();
  return () => {
    stopped = true;
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const at = (index: number) => sorted[index] ?? Number.NaN;
  return sorted.length % 2 ? at(mid) : (at(mid - 1) + at(mid)) / 2;
}

const fmt = (ms: number) => ms.toFixed(0).padStart(7);

function printMedians(runs: Phase[][]): void {
  const names: string[] = [];
  for (const run of runs) for (const phase of run) if (!names.includes(phase.name)) names.push(phase.name);
  for (const name of names) {
    const values = runs.flatMap((run) => run.filter((p) => p.name === name).map((p) => p.durationMs));
    console.log(`  ${name.padEnd(32)}${fmt(median(values))}`);
  }
}

async function main(): Promise<void> {
  if (BACKEND !== "docker" && BACKEND !== "flyio")
    throw new Error(`backend must be docker or flyio, not ${BACKEND}`);
  await ensureTemplate();
  const backend = BACKEND === "docker" ? await dockerBackend() : await flyBackend();
  try {
    await backend.platform.listen();
    console.log(`start: ${machine()}`);
    const id = await backend.create();
    // Warm-up, untimed.
    await raw(backend, id, 0);
    await viaPlatform(backend, id, 0);

    const rawRuns: number[] = [];
    const runs: Awaited<ReturnType<typeof viaPlatform>>[] = [];
    for (let i = 1; i <= N; i++) {
      if (i % 2) {
        rawRuns.push(await raw(backend, id, i));
        runs.push(await viaPlatform(backend, id, i));
      } else {
        runs.push(await viaPlatform(backend, id, i));
        rawRuns.push(await raw(backend, id, i));
      }
      console.error(
        `#${i}: raw resume → answer ${rawRuns.at(-1)?.toFixed(0)} ms; A2A to suspended → answer ${runs.at(-1)?.totalMs.toFixed(0)} ms`,
      );
    }
    const totals = runs.map((run) => run.totalMs);
    const added = runs.map((run, i) => run.totalMs - (rawRuns[i] ?? Number.NaN));
    console.log(`\nwake → first answer, ${backend.subject}, N=${runs.length} (ms)`);
    console.log(`${"".padEnd(36)} median     min     max`);
    for (const [name, values] of [
      [backend.rawLabel, rawRuns],
      ["A2A to suspended → answer (platform)", totals],
    ] as const) {
      console.log(
        `${name.padEnd(36)}${fmt(median(values))} ${fmt(Math.min(...values))} ${fmt(Math.max(...values))}`,
      );
    }
    console.log(`ratio platform/raw (medians): ${(median(totals) / median(rawRuns)).toFixed(2)}`);
    console.log(`median added: ${median(added).toFixed(0)} ms (per-iteration platform − raw)`);
    console.log("\nmedian of the start operation's steps (ms)");
    printMedians(runs.map((run) => run.steps));
    console.log("\na platform wake (ms; online: the platform's status event)");
    printMedians(runs.map((run) => run.phases));
    console.log(`end:   ${machine()}`);
  } finally {
    await backend.close().catch((error) => console.error(`closing the platform: ${String(error)}`));
  }
}

await runBench(main, {
  hardLimitMs: 300_000,
  cleanup: () => (BACKEND === "docker" ? removeDeployment(docker, deployment) : Promise.resolve()),
});

/**
 * Time from `POST /workspaces` to `online` for the echo image on the real Docker engine, against a bare container
 * run of the same image until its process answers `GET /health`, measured in the same run and interleaved.
 * Prints median/min/max of both, the ratio of the medians, the median added milliseconds, the median of each
 * recorded operation step, and the phases after the container's process started, from the agent's own log lines
 * (both paths: the bare run's agent starts the same way, then fails to register with nobody). Loopback only; a fresh PostgreSQL database; everything labelled with the bench's
 * deployment is removed at the end (and on error). Bounded: stops starting iterations after ~4 minutes. The image is
 * built from this checkout first (a hash check when unchanged), so the agent measured is this checkout's.
 *
 *   pnpm exec tsx bench/provision-to-online.ts [N]      (default N=5; WORKSPACE_IMAGE_TAG as the tests read it)
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createDockerProvisioner, resourceName } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import { freePort } from "../test-support/net.ts";
import { ensureTemplate } from "../test-support/pg.ts";
import { createTestPlatform, type TestPlatform } from "../test-support/platform.ts";

const N = Math.max(1, Number(process.argv[2] ?? 5) || 5);
const IMAGE_TAG = process.env.WORKSPACE_IMAGE_TAG ?? "latest";
const IMAGE = `molecule/workspace-echo:${IMAGE_TAG}`;
const POLL_MS = 20;
const STEP_TIMEOUT_MS = 60_000;
const BUDGET_MS = 240_000;
const HARD_LIMIT_MS = BUDGET_MS + 120_000;

const docker = new Dockerode();
const deployment = `bench-${randomBytes(4).toString("hex")}`;
const label = `molecule.deployment=${deployment}`;

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

/** The image of this checkout's agent (infra/build-workspace-image.sh reuses an unchanged one). */
function buildImage(): void {
  execFileSync("bash", ["infra/build-workspace-image.sh"], { stdio: ["ignore", "ignore", "inherit"] });
}

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

/** Epoch ms of the container's process start and of each of its agent's log events (the first of each name). */
async function agentTimeline(container: Dockerode.Container): Promise<Record<string, number>> {
  const info = await container.inspect();
  const marks: Record<string, number> = { process_started: Date.parse(info.State.StartedAt) };
  const text = (await container.logs({ stdout: true, stderr: true })).toString("utf8");
  for (const match of text.matchAll(/\{"time":"([^"]+)","level":"[a-z]+","event":"([a-z0-9_]+)"/g)) {
    const [, time, event] = match;
    if (time && event && marks[event] === undefined) marks[event] = Date.parse(time);
  }
  return marks;
}

interface Phase {
  name: string;
  durationMs: number;
}

/** The phases between marks that are all present, in order. */
function phases(marks: Record<string, number>, spans: [string, string, string][]): Phase[] {
  const out: Phase[] = [];
  for (const [name, from, to] of spans) {
    const a = marks[from];
    const b = marks[to];
    if (a !== undefined && b !== undefined) out.push({ name, durationMs: b - a });
  }
  return out;
}

const AGENT_START: [string, string, string][] = [
  ["  process start → listening", "process_started", "a2a_listening"],
];
// The platform moves a workspace online when its agent registers with the secrets in the answer (the registration is
// its first heartbeat), or at its first heartbeat otherwise: "online" is the platform's status event either way.
const AGENT_ARRIVAL: [string, string, string][] = [
  ...AGENT_START,
  ["  listening → online (platform)", "a2a_listening", "online"],
  ["  listening → registered (agent)", "a2a_listening", "registered"],
  ["  registered → ready (agent)", "registered", "agent_ready"],
];

interface BaselineRun {
  totalMs: number;
  phases: Phase[];
}

/** A bare `docker run -d --rm --network host -e …` of the image (via the Engine API), until /health answers 200. */
async function baseline(i: number): Promise<BaselineRun> {
  const port = await freePort();
  const startedAt = Date.now();
  const started = performance.now();
  const container = await docker.createContainer({
    Image: IMAGE,
    name: `${deployment}-baseline-${i}`,
    Env: [
      `AGENT_PORT=${port}`,
      `WORKSPACE_ID=ws_bench${String(i).padStart(6, "0")}`,
      "PLATFORM_URL=http://127.0.0.1:9",
      "WORKSPACE_BOOT_TOKEN=x",
    ],
    Labels: { "molecule.deployment": deployment },
    HostConfig: { NetworkMode: "host", AutoRemove: true },
  });
  try {
    await container.start();
    await until(`baseline container to answer on :${port}`, async () => {
      const response = await fetch(`http://127.0.0.1:${port}/health`);
      await response.arrayBuffer();
      return response.status === 200 ? true : undefined;
    });
    const totalMs = performance.now() - started;
    // Not timed from here on.
    const marks = { ...(await agentTimeline(container)), created: startedAt };
    return {
      totalMs,
      phases: phases(marks, [
        ["  create+start → process start", "created", "process_started"],
        ...AGENT_START,
      ]),
    };
  } finally {
    await container.remove({ force: true }).catch(() => {});
  }
}

interface PlatformRun {
  totalMs: number;
  steps: Phase[];
  phases: Phase[];
}

/** When each workspace went online, as the platform published it (exact, unlike the bench's polling). */
const onlineAt = new Map<string, number>();

async function viaPlatform(platform: TestPlatform, i: number): Promise<PlatformRun> {
  const postedAt = Date.now();
  const started = performance.now();
  const created = await platform.call("POST", "/workspaces", {
    body: { name: `bench-${i}`, runtime: "echo", tier: 2 },
  });
  if (created.status !== 202) throw new Error(`POST /workspaces answered ${created.status}`);
  const id: string = created.body.workspace.id;
  const operationId: string = created.body.operation.id;
  let last: unknown;
  try {
    await until(`workspace ${id} to be online`, async () => {
      const workspace = (await platform.call("GET", `/workspaces/${id}`)).body;
      last = workspace;
      if (workspace.status === "failed") throw new Error(`failed: ${workspace.statusReason}`);
      return workspace.status === "online" ? true : undefined;
    });
  } catch (error) {
    throw new Error(`${(error as Error).message}; last seen ${JSON.stringify(last)}`);
  }
  const totalMs = performance.now() - started;
  const seenOnlineAt = Date.now();

  // Not timed from here on.
  const operation = await until(`operation ${operationId} to finish`, async () => {
    const body = (await platform.call("GET", `/operations/${operationId}`)).body;
    return body.finishedAt ? body : undefined;
  });
  const recorded: { name: string; startedAt: string; durationMs: number }[] = operation.steps ?? [];
  const steps: { name: string; durationMs: number }[] = [];
  const firstStep = recorded[0];
  const lastStep = recorded.at(-1);
  if (firstStep && lastStep) {
    const first = Date.parse(firstStep.startedAt);
    const end = Date.parse(lastStep.startedAt) + lastStep.durationMs;
    steps.push({ name: "(POST → runner picks up)", durationMs: first - postedAt });
    for (const step of recorded) steps.push({ name: step.name, durationMs: step.durationMs });
    steps.push({ name: "(last step → online)", durationMs: seenOnlineAt - end });
  }
  const marks = await agentTimeline(docker.getContainer(resourceName(id)));
  const online = onlineAt.get(id);
  if (online !== undefined) marks.online = online;

  await platform.call("DELETE", `/workspaces/${id}`);
  await until(
    `workspace ${id} to be removed`,
    async () => {
      const workspace = (await platform.call("GET", `/workspaces/${id}`)).body;
      return workspace?.status === "removed" ? true : undefined;
    },
    100,
  );
  return { totalMs, steps, phases: phases(marks, AGENT_ARRIVAL) };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const at = (index: number) => sorted[index] ?? Number.NaN;
  return sorted.length % 2 ? at(mid) : (at(mid - 1) + at(mid)) / 2;
}

const fmt = (ms: number) => ms.toFixed(0).padStart(7);

/** The median of each named phase over the runs, in the order they first appear. */
function printMedians(runs: Phase[][]): void {
  const names: string[] = [];
  for (const run of runs) for (const phase of run) if (!names.includes(phase.name)) names.push(phase.name);
  for (const name of names) {
    const values = runs.flatMap((run) => run.filter((p) => p.name === name).map((p) => p.durationMs));
    console.log(`  ${name.padEnd(32)}${fmt(median(values))}`);
  }
}

async function main(): Promise<void> {
  buildImage();
  await ensureTemplate();
  const provisioner = createDockerProvisioner({
    deployment,
    imagePrefix: "molecule/workspace-",
    imageTag: IMAGE_TAG,
    network: "host",
  });
  const platform = await createTestPlatform(
    provisioner,
    { deployment, workspaceEnv: { AGENT_PORT: "0", HEARTBEAT_INTERVAL_MS: "1000" } },
    { sweepIntervalMs: 1_000 },
  );
  try {
    await platform.listen();
    platform.deps.events.subscribe({}, (event) => {
      if (event.type === "workspace.status" && event.data.to === "online" && event.workspaceId)
        onlineAt.set(event.workspaceId, Date.now());
    });
    const benchStarted = Date.now();
    // Warm-up, untimed.
    await baseline(0);
    await viaPlatform(platform, 0);

    const bareRuns: BaselineRun[] = [];
    const runs: PlatformRun[] = [];
    for (let i = 1; i <= N; i++) {
      if (Date.now() - benchStarted > BUDGET_MS) {
        console.error(`time budget spent after ${i - 1} iterations`);
        break;
      }
      // Alternate which goes first so neither always runs on a just-freed engine.
      if (i % 2) {
        bareRuns.push(await baseline(i));
        runs.push(await viaPlatform(platform, i));
      } else {
        runs.push(await viaPlatform(platform, i));
        bareRuns.push(await baseline(i));
      }
      console.error(
        `#${i}: docker run → /health ${bareRuns.at(-1)?.totalMs.toFixed(0)} ms; POST → online ${runs.at(-1)?.totalMs.toFixed(0)} ms`,
      );
    }
    if (runs.length === 0) throw new Error("no iterations ran");
    const bare = bareRuns.map((run) => run.totalMs);

    const totals = runs.map((run) => run.totalMs);
    const added = runs.map((run, i) => run.totalMs - (bare[i] ?? Number.NaN));
    console.log(`\nprovision-to-online, ${IMAGE}, N=${runs.length} (ms)`);
    console.log(`${"".padEnd(28)} median     min     max`);
    for (const [name, values] of [
      ["docker run → /health 200", bare],
      ["POST /workspaces → online", totals],
    ] as const) {
      console.log(
        `${name.padEnd(28)}${fmt(median(values))} ${fmt(Math.min(...values))} ${fmt(Math.max(...values))}`,
      );
    }
    console.log(`ratio platform/baseline (medians): ${(median(totals) / median(bare)).toFixed(2)}`);
    console.log(`median added: ${median(added).toFixed(0)} ms (per-iteration platform − baseline)`);

    console.log("\nmedian of the create operation's steps (ms)");
    printMedians(runs.map((run) => run.steps));
    console.log("\nafter the process started, from the agent's log (ms)");
    console.log("  docker run:");
    printMedians(bareRuns.map((run) => run.phases));
    console.log("  POST /workspaces (online: the platform's status event):");
    printMedians(runs.map((run) => run.phases));
  } finally {
    await platform.close().catch((error) => console.error(`closing the platform: ${String(error)}`));
    await cleanup();
  }
}

const hardLimit = setTimeout(() => {
  console.error(`bench exceeded ${HARD_LIMIT_MS} ms; cleaning up and exiting`);
  cleanup().finally(() => process.exit(1));
}, HARD_LIMIT_MS);
hardLimit.unref();

let failed = false;
try {
  await main();
} catch (error) {
  failed = true;
  console.error(error);
}
process.exit(failed ? 1 : 0);

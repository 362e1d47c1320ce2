/**
 * Wake → first answer: an A2A `message/send` through the platform's proxy to a suspended workspace (its container
 * paused by the docker backend) until the answer arrives, against a raw `docker unpause` of the same container (Engine
 * API) until its agent answers the same message sent straight to it (with its inbound token), measured in the same
 * run, interleaved, the order alternating. Both wake from the same state: the workspace suspended through the platform
 * (`POST /workspaces/:id/suspend`, the container paused), then left paused for PAUSED_MS so the agent's heartbeat is
 * due when it thaws (as after any real idle time). After a raw unpause the platform is told with `POST /start` (not
 * timed; it finds the container running). Prints median/min/max of both, the ratio of the medians, the median added
 * milliseconds, and the median of the start operation's steps and of the phases of a platform wake.
 *
 * The platform runs in this process (as the docker tests run it) on a fresh PostgreSQL database, the echo image on the
 * host network, agents heartbeating every second. Everything labelled with the bench's deployment is removed at the
 * end (and on error). The image is built from this checkout first (a hash check when unchanged).
 *
 *   pnpm exec tsx bench/wake.ts [N]      (default N=9; WORKSPACE_IMAGE_TAG as the tests read it)
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { INBOUND_TOKEN_HEADER } from "@molecule/contracts";
import { workspaces } from "@molecule/db";
import { createDockerProvisioner, resourceName } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import { eq } from "drizzle-orm";
import { openInboundToken } from "../apps/tenant-platform/src/services/inbound-token.ts";
import { removeDeployment } from "../test-support/docker-platform.ts";
import { ensureTemplate } from "../test-support/pg.ts";
import { createTestPlatform, type TestPlatform } from "../test-support/platform.ts";
import { machine, runBench } from "./lib.ts";

const N = Math.max(1, Number(process.argv[2] ?? 9) || 9);
const IMAGE_TAG = process.env.WORKSPACE_IMAGE_TAG ?? "latest";
const POLL_MS = 5;
const STEP_TIMEOUT_MS = 60_000;
/** How long the container stays paused before each wake: past one heartbeat interval (1 s here). */
const PAUSED_MS = 1_500;

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

async function statusIs(platform: TestPlatform, id: string, status: string): Promise<void> {
  await until(
    `workspace ${id} to be ${status}`,
    async () => ((await platform.call("GET", `/workspaces/${id}`)).body.status === status ? true : undefined),
    20,
  );
}

/** Suspends the workspace through the platform and leaves it paused for PAUSED_MS. */
async function suspend(platform: TestPlatform, id: string): Promise<void> {
  const accepted = await platform.call("POST", `/workspaces/${id}/suspend`);
  if (accepted.status !== 202) throw new Error(`suspend answered ${accepted.status}`);
  await statusIs(platform, id, "suspended");
  if (!(await docker.getContainer(resourceName(id)).inspect()).State.Paused) throw new Error("not paused");
  await sleep(PAUSED_MS);
}

/** Wake → first answer through the proxy, with the start operation's steps and when it went online. */
async function viaPlatform(platform: TestPlatform, id: string, i: number) {
  await suspend(platform, id);
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

/** Wake → first answer by hand: `docker unpause`, then the same message straight to the agent until it answers. */
async function raw(platform: TestPlatform, id: string, i: number): Promise<number> {
  await suspend(platform, id);
  const [row] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
  if (!row?.url) throw new Error("no agent URL");
  const url = row.url;
  const inbound = openInboundToken(platform.deps.sealer, row);
  const body = JSON.stringify(message(i));
  const started = performance.now();
  await docker.getContainer(resourceName(id)).unpause();
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
  // Not timed: the platform learns the container runs again (start finds it running) and sees it online.
  await platform.call("POST", `/workspaces/${id}/start`);
  await statusIs(platform, id, "online");
  return totalMs;
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
  execFileSync("bash", ["infra/build-workspace-image.sh"], { stdio: ["ignore", "ignore", "inherit"] });
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
    console.log(`start: ${machine()}`);
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "bench-wake", runtime: "echo", idle_suspend_seconds: 0 },
    });
    const id: string = created.body.workspace.id;
    await statusIs(platform, id, "online");
    // Warm-up, untimed.
    await raw(platform, id, 0);
    await viaPlatform(platform, id, 0);

    const rawRuns: number[] = [];
    const runs: Awaited<ReturnType<typeof viaPlatform>>[] = [];
    for (let i = 1; i <= N; i++) {
      if (i % 2) {
        rawRuns.push(await raw(platform, id, i));
        runs.push(await viaPlatform(platform, id, i));
      } else {
        runs.push(await viaPlatform(platform, id, i));
        rawRuns.push(await raw(platform, id, i));
      }
      console.error(
        `#${i}: docker unpause → answer ${rawRuns.at(-1)?.toFixed(0)} ms; A2A to suspended → answer ${runs.at(-1)?.totalMs.toFixed(0)} ms`,
      );
    }
    const totals = runs.map((run) => run.totalMs);
    const added = runs.map((run, i) => run.totalMs - (rawRuns[i] ?? Number.NaN));
    console.log(`\nwake → first answer, molecule/workspace-echo:${IMAGE_TAG}, N=${runs.length} (ms)`);
    console.log(`${"".padEnd(36)} median     min     max`);
    for (const [name, values] of [
      ["docker unpause → agent answers", rawRuns],
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
    await platform.close().catch((error) => console.error(`closing the platform: ${String(error)}`));
  }
}

await runBench(main, { hardLimitMs: 300_000, cleanup: () => removeDeployment(docker, deployment) });

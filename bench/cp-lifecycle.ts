/**
 * The latency a SaaS tenant adds to a workspace lifecycle call: stop and start made through the tenant platform
 * (which runs them through the control plane) against the same calls made directly on the control plane, signed,
 * measured in the same run, interleaved cycle by cycle.
 *
 * - The control plane runs in this process (createApp + its operation runner, as main.ts wires them) on a fresh
 *   PostgreSQL database with its migrations, served over loopback HTTP. Its workspace backend is provisioner-core's
 *   fake with zero latency, so only the platform's own work is measured, not a backend's; its tenant backend is
 *   `external` (the bench starts the tenant itself).
 * - The tenant platform is its own process (bench/lib.ts startBenchPlatform) in SaaS mode for an org made with
 *   `POST /cp/orgs`, started with the credential, admin token and signing key the control plane gives that org.
 * - Direct: `POST /cp/workspaces/:id/stop` (then `/start` with the spec), signed as a tenant signs, then
 *   `GET /cp/operations/:id` every POLL_MS until the operation succeeded.
 * - Through the tenant: `POST /workspaces/:id/stop` (then `/start`) with the tenant's admin token, then
 *   `GET /workspaces/:id` every POLL_MS until the workspace is `stopped` (then `awaiting_agent`).
 * Each path has its own workspace, provisioned before measuring; two warm-up cycles per path are not counted.
 *
 * Where the time goes: the bench also traces each measured call on the control plane's side (its HTTP handler is
 * wrapped to note when the lifecycle POST arrives and is answered and when a `GET /cp/operations/:id` first answers
 * `succeeded`; the fake backend is wrapped to note when it is called and returns; the operation's `finished_at` says
 * when the runner ended it) and prints the mean of each phase, which add up to the call's mean.
 *
 *   pnpm exec tsx bench/cp-lifecycle.ts
 *   BENCH_CYCLES=20 (stop→start cycles per path)  BENCH_POLL_MS=5
 */
import { randomBytes, randomUUID } from "node:crypto";
import { type ServerType, serve } from "@hono/node-server";
import { type CpOperationView, createIdGenerator } from "@molecule/contracts";
import { deriveTenantSigningKey, Sealer } from "@molecule/identity";
import type { Provisioner } from "@molecule/provisioner-core";
import { ControlPlaneClient } from "@molecule/provisioner-core";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { EventBus } from "@molecule/service-kit/events";
import pino from "pino";
import { createApp, createOperationRunner } from "../apps/control-plane/src/app.ts";
import { createExternalTenantBackend } from "../apps/control-plane/src/backends.ts";
import { CP_MIGRATIONS } from "../apps/control-plane/src/db/migrations.ts";
import { type ControlPlaneDeps, systemClock } from "../apps/control-plane/src/services/deps.ts";
import { controlPlaneMetrics } from "../apps/control-plane/src/services/metrics.ts";
import type { OperationRunner } from "../apps/control-plane/src/services/runner.ts";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import { freePort } from "../test-support/process.ts";
import {
  type BenchPlatform,
  envNumber,
  machine,
  num,
  runBench,
  type Summary,
  startBenchPlatform,
  summarize,
} from "./lib.ts";

const CYCLES = Math.round(envNumber("BENCH_CYCLES", 20));
const POLL_MS = envNumber("BENCH_POLL_MS", 5);
const WARMUP = 2;
const STEP_TIMEOUT_MS = 30_000;
const HARD_LIMIT_MS = 240_000;

const ADMIN_TOKEN = `mca_${randomBytes(24).toString("base64url")}`;
const SHARED_SECRET = randomBytes(32).toString("hex");

let cpDb: TestDatabase | undefined;
let runner: OperationRunner | undefined;
let server: ServerType | undefined;
let tenant: BenchPlatform | undefined;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** High-resolution ms on the wall-clock scale, so the control plane's `finished_at` can be placed among them. */
const EPOCH_OFFSET = Date.now() - performance.now();
const now = () => EPOCH_OFFSET + performance.now();

/** What the control plane did for the one call being measured (calls never overlap). */
interface Trace {
  postIn?: number;
  accepted?: number;
  operationId?: string;
  /** Every claim the runner made during the call: when it began and ended, and which operation it got. */
  claims: { start: number; end: number; id: string }[];
  backendIn?: number;
  backendOut?: number;
  finished?: number;
  /** When the first poll that answered `succeeded` arrived, and when it was answered. */
  seenIn?: number;
  seen?: number;
  polls: number;
}
let trace: Trace | null = null;

/** Calls through the tenant whose operation was still open when the workspace showed its target status. */
let openAtTarget = 0;

type PathName = "directStop" | "tenantStop" | "directStart" | "tenantStart";

const PHASES = [
  ["to the control plane's POST", "tenant: accept, operation row, runner, signed send"],
  ["control plane accepts (202)", "auth, idempotency, operation row"],
  ["202 → claim begins", "control plane runner: wake"],
  ["claim", "control plane runner: claim transaction"],
  ["claimed → backend called", "control plane: operation input read and unsealed"],
  ["backend call", "the fake, zero latency"],
  ["backend → finished_at", "steps and finish written"],
  ["finished → the poll arrives", "the caller's poll schedule"],
  ["the poll answered", "control plane: auth, nonce, operation read"],
  ["poll answer → caller sees", "tenant: status change; the bench's own 5 ms poll"],
] as const;

function phases(started: number, total: number, t: Trace): number[] {
  const need = (value: number | undefined, what: string) => {
    if (value === undefined) throw new Error(`trace: no ${what}`);
    return value;
  };
  const claim = t.claims.find((c) => c.id === t.operationId);
  const marks = [
    started,
    need(t.postIn, "lifecycle POST"),
    need(t.accepted, "202"),
    need(claim?.start, "claim"),
    need(claim?.end, "claim"),
    need(t.backendIn, "backend call"),
    need(t.backendOut, "backend return"),
    need(t.finished, "finished_at"),
    need(t.seenIn, "poll that saw the end"),
    need(t.seen, "its answer"),
    started + total,
  ];
  return marks.slice(1).map((mark, i) => mark - (marks[i] as number));
}

/** The control plane's HTTP handler, noting the lifecycle POST, its 202 and the first poll that sees the end. */
function tracedFetch(fetch: (request: Request) => Response | Promise<Response>) {
  return async (request: Request): Promise<Response> => {
    const t = trace;
    const route = `${request.method} ${new URL(request.url).pathname}`;
    const lifecycle = /^POST \/cp\/workspaces\/[^/]+\/(stop|start)$/.test(route);
    const poll = route.startsWith("GET /cp/operations/");
    const arrived = now();
    if (t && lifecycle) t.postIn ??= arrived;
    const response = await fetch(request);
    const answered = now();
    if (!t || !(lifecycle || poll) || response.status >= 300) return response;
    const body = (await response.clone().json()) as {
      operation?: CpOperationView;
    } & Partial<CpOperationView>;
    if (lifecycle && body.operation && t.operationId === undefined) {
      t.operationId = body.operation.id;
      t.accepted = answered;
    } else if (poll && body.id === t.operationId) {
      t.polls += 1;
      if (body.status === "succeeded" && t.seen === undefined) {
        t.seenIn = arrived;
        t.seen = answered;
        t.finished = Date.parse(body.finished_at ?? "");
      }
    }
    return response;
  };
}

/** The workspace backend, noting when start and stop are called and return. */
function tracedBackend(backend: Provisioner): Provisioner {
  const around =
    <A extends unknown[], R>(call: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      const t = trace;
      if (t) t.backendIn ??= now();
      try {
        return await call(...args);
      } finally {
        if (t) t.backendOut = now();
      }
    };
  return {
    ...backend,
    start: around(backend.start.bind(backend)),
    stop: around(backend.stop.bind(backend)),
  };
}

async function until<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${STEP_TIMEOUT_MS} ms waiting for ${what}`);
    await sleep(POLL_MS);
  }
}

/** The control plane in this process, served on a loopback port; tenants are started by the bench. */
async function startControlPlane(tenantUrl: string): Promise<string> {
  cpDb = await createTestDatabase({ migrations: CP_MIGRATIONS });
  const deps: ControlPlaneDeps = {
    db: cpDb.db,
    advisoryLock: cpDb.withAdvisoryLock,
    provisioner: tracedBackend(createFakeProvisioner()),
    tenants: createExternalTenantBackend(tenantUrl),
    sealer: Sealer.fromConfig(randomBytes(32).toString("hex"), 1, ""),
    events: new EventBus(),
    metrics: controlPlaneMetrics(cpDb.db),
    clock: systemClock,
    ids: createIdGenerator(),
    // one line per request at info, as in production, written where nobody reads it
    logger: pino({ level: "info" }, pino.destination("/dev/null")),
    settings: {
      adminToken: ADMIN_TOKEN,
      provisionSharedSecret: SHARED_SECRET,
      publicUrl: "http://127.0.0.1",
      deployment: "bench",
      maxBodyBytes: 256 * 1024,
      operationLeaseMs: 30_000,
      operationMaxAttempts: 3,
      reconcile: { intervalMs: 30 * 60_000, deleteOrphans: false, orphanGraceMs: 60 * 60_000 },
      backups: { staleAfterMs: 36 * 60 * 60_000, tenantEnv: {} },
    },
  };
  const cpRunner = createOperationRunner(deps, `bench-${process.pid}`);
  runner = cpRunner;
  // noted for the trace: when the runner's claim that picks up the measured operation begins and ends
  const claim = cpRunner.claim.bind(cpRunner);
  cpRunner.claim = async () => {
    const t = trace;
    const start = now();
    const row = await claim();
    if (t && row) t.claims.push({ start, end: now(), id: row.id });
    return row;
  };
  const app = createApp(deps, { onOperationQueued: () => cpRunner.wake() });
  const port = await freePort();
  await new Promise<void>((resolve) => {
    server = serve({ fetch: tracedFetch(app.fetch), port, hostname: "127.0.0.1" }, () => resolve());
  });
  cpRunner.start();
  return `http://127.0.0.1:${port}`;
}

async function admin(cpUrl: string, method: string, path: string, body?: unknown) {
  const response = await fetch(`${cpUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  // biome-ignore lint/suspicious/noExplicitAny: read field by field
  return { status: response.status, body: (await response.json()) as any };
}

/** A signed control-plane call that queues an operation, then polls the operation until it succeeded. */
async function direct(client: ControlPlaneClient, path: string, body: unknown): Promise<number> {
  const started = performance.now();
  const accepted = await client.call<{ operation: CpOperationView }>({
    op: "bench",
    method: "POST",
    path,
    body,
    idempotencyKey: randomUUID(),
  });
  let operation = accepted.body.operation;
  while (operation.status !== "succeeded") {
    if (operation.status === "failed") throw new Error(`${path}: ${JSON.stringify(operation.error)}`);
    await sleep(POLL_MS);
    operation = (
      await client.call<CpOperationView>({
        op: "bench",
        method: "GET",
        path: `/cp/operations/${operation.id}`,
      })
    ).body;
  }
  return performance.now() - started;
}

/** A tenant lifecycle call, then `GET /workspaces/:id` until the workspace reached `target`. */
async function throughTenant(platform: BenchPlatform, id: string, action: string, target: string) {
  const started = performance.now();
  const accepted = await platform.process.call("POST", `/workspaces/${id}/${action}`);
  if (accepted.status !== 202)
    throw new Error(`${action}: HTTP ${accepted.status} ${JSON.stringify(accepted.body)}`);
  let elapsed: number;
  for (;;) {
    const { body } = await platform.process.call("GET", `/workspaces/${id}`);
    if (body.status === target) {
      elapsed = performance.now() - started;
      break;
    }
    if (body.status === "failed") throw new Error(`${action}: ${body.statusReason}`);
    if (performance.now() - started > STEP_TIMEOUT_MS) throw new Error(`${action}: still ${body.status}`);
    await sleep(POLL_MS);
  }
  // Not measured: the tenant moves the workspace before it closes the operation row, and refuses the next call
  // (409, still in progress) until it has.
  const operationId: string = accepted.body.operation.id;
  let open = false;
  await until(`operation ${operationId} to end`, async () => {
    const { body } = await platform.process.call("GET", `/operations/${operationId}`);
    if (body.status === "succeeded") return true;
    if (body.status === "failed") throw new Error(`${action}: ${JSON.stringify(body.error)}`);
    open = true;
    return undefined;
  });
  if (open) openAtTarget += 1;
  return elapsed;
}

function row(label: string, s: Summary): string {
  return `${label.padEnd(28)}${num(s.p50, 10)}${num(s.p99, 10)}${num(s.mean, 10)}`;
}

async function main(): Promise<void> {
  console.log(`cp-lifecycle: ${CYCLES} stop→start cycles per path, poll every ${POLL_MS} ms; ${machine()}`);
  const tenantPort = await freePort();
  const cpUrl = await startControlPlane(`http://127.0.0.1:${tenantPort}`);

  const created = await admin(cpUrl, "POST", "/cp/orgs", { slug: "bench-org", name: "Bench org" });
  if (created.status !== 201)
    throw new Error(`POST /cp/orgs: ${created.status} ${JSON.stringify(created.body)}`);
  const orgId: string = created.body.org.id;
  const credential: string = created.body.tenant_credential;
  const signingKey = deriveTenantSigningKey(SHARED_SECRET, orgId);
  tenant = await startBenchPlatform({
    PORT: String(tenantPort),
    CONTAINER_BACKEND: "controlplane",
    MOLECULE_ORG_ID: orgId,
    CP_PROVISION_URL: cpUrl,
    CP_TENANT_TOKEN: credential,
    PROVISION_SHARED_SECRET: signingKey,
    ADMIN_TOKEN: created.body.tenant_admin_token,
  });
  const platform = tenant;
  await until("the org to be ready", async () => {
    const { body } = await admin(cpUrl, "GET", "/cp/orgs/bench-org");
    return body.org.status === "ready" ? true : undefined;
  });

  // Through the tenant: a workspace the tenant made (awaiting_agent: no agent runs in the fake).
  const made = await platform.process.call("POST", "/workspaces", {
    name: "bench",
    runtime: "echo",
    tier: 2,
  });
  if (made.status !== 202) throw new Error(`POST /workspaces: ${made.status} ${JSON.stringify(made.body)}`);
  const tenantWs: string = made.body.workspace.id;
  await until("the tenant's workspace", async () => {
    const { body } = await platform.process.call("GET", `/workspaces/${tenantWs}`);
    return body.status === "awaiting_agent" ? true : undefined;
  });

  // Direct: a workspace of the same org, provisioned by a signed call as the tenant would make it.
  const client = new ControlPlaneClient({
    baseUrl: cpUrl,
    tenantToken: credential,
    signingKey,
    maxAttempts: 1,
  });
  const directWs = createIdGenerator().next("ws");
  const spec = {
    workspace_id: directWs,
    runtime: "echo",
    tier: 2,
    env: { WORKSPACE_ID: directWs, WORKSPACE_BOOT_TOKEN: randomBytes(16).toString("hex") },
    secret_keys: ["WORKSPACE_BOOT_TOKEN"],
    metadata: {},
  };
  await direct(client, "/cp/workspaces/provision", spec);

  const samples: Record<PathName, number[]> = {
    directStop: [],
    directStart: [],
    tenantStop: [],
    tenantStart: [],
  };
  const traces: Record<PathName, { phases: number[]; polls: number }[]> = {
    directStop: [],
    directStart: [],
    tenantStop: [],
    tenantStart: [],
  };
  /** Runs one call with the control plane traced; kept only when `path` is given. */
  const measure = async (path: PathName | null, run: () => Promise<number>) => {
    const t: Trace = { polls: 0, claims: [] };
    trace = t;
    const started = now();
    try {
      const total = await run();
      if (!path) return;
      samples[path].push(total);
      traces[path].push({ phases: phases(started, total, t), polls: t.polls });
    } finally {
      trace = null;
    }
  };
  const runDirect = async (keep: boolean) => {
    await measure(keep ? "directStop" : null, () => direct(client, `/cp/workspaces/${directWs}/stop`, {}));
    await measure(keep ? "directStart" : null, () =>
      direct(client, `/cp/workspaces/${directWs}/start`, { spec, recreate: false }),
    );
  };
  const runTenant = async (keep: boolean) => {
    await measure(keep ? "tenantStop" : null, () => throughTenant(platform, tenantWs, "stop", "stopped"));
    await measure(keep ? "tenantStart" : null, () =>
      throughTenant(platform, tenantWs, "start", "awaiting_agent"),
    );
  };
  for (let i = 0; i < WARMUP; i++) {
    await runDirect(false);
    await runTenant(false);
  }
  const started = performance.now();
  for (let i = 0; i < CYCLES; i++) {
    // alternate which path goes first, so drift in the machine's load hits both
    if (i % 2 === 0) {
      await runDirect(true);
      await runTenant(true);
    } else {
      await runTenant(true);
      await runDirect(true);
    }
  }
  const elapsed = (performance.now() - started) / 1000;

  const s = {
    directStop: summarize(samples.directStop),
    tenantStop: summarize(samples.tenantStop),
    directStart: summarize(samples.directStart),
    tenantStart: summarize(samples.tenantStart),
  };
  console.log(`\n${"ms".padEnd(28)}${"p50".padStart(10)}${"p99".padStart(10)}${"mean".padStart(10)}`);
  for (const [kind, d, t] of [
    ["stop", s.directStop, s.tenantStop],
    ["start", s.directStart, s.tenantStart],
  ] as const) {
    console.log(row(`${kind}, direct (signed)`, d));
    console.log(row(`${kind}, through tenant`, t));
    console.log(
      `${`${kind}, ratio tenant/direct`.padEnd(28)}${num(t.p50 / d.p50, 10)}${num(t.p99 / d.p99, 10)}${num(t.mean / d.mean, 10)}`,
    );
    console.log(
      `${`${kind}, added`.padEnd(28)}${num(t.p50 - d.p50, 10)}${num(t.p99 - d.p99, 10)}${num(t.mean - d.mean, 10)}`,
    );
  }
  const order: PathName[] = ["directStop", "tenantStop", "directStart", "tenantStart"];
  const mean = (values: number[]) => values.reduce((sum, v) => sum + v, 0) / values.length;
  console.log(
    `\nwhere the time goes, mean ms${" ".repeat(2)}${["stop dir", "stop ten", "start dir", "start ten"].map((h) => h.padStart(10)).join("")}`,
  );
  PHASES.forEach(([label], i) => {
    const cells = order.map((path) => num(mean(traces[path].map((x) => x.phases[i] ?? NaN)), 10));
    console.log(`${label.padEnd(30)}${cells.join("")}`);
  });
  console.log(
    `${"operation polls per call".padEnd(30)}${order.map((path) => num(mean(traces[path].map((x) => x.polls)), 10)).join("")}`,
  );
  console.log(PHASES.map(([label, what]) => `  ${label}: ${what}`).join("\n"));
  console.log(
    `\nthrough the tenant, ${openAtTarget} of ${2 * CYCLES} calls showed the target status before the tenant's operation ended`,
  );
  console.log(`\n${CYCLES} cycles per path in ${elapsed.toFixed(1)} s; ${machine()}`);
}

void runBench(main, {
  hardLimitMs: HARD_LIMIT_MS,
  async cleanup() {
    await tenant?.close();
    await runner?.stop();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await cpDb?.drop();
  },
});

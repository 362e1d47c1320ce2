/**
 * The chaos run: two control-plane processes on one database (EC2 tenants on moto behind the AWS fault proxy, Fly
 * workspaces on the Fly emulator) and two replicas of one standalone tenant platform (docker workspaces running the
 * echo agent), all on one PostgreSQL server. For CHAOS_SECONDS (default 180) a seeded driver sends random workspace
 * creates, stops, starts, restarts and deletes to the tenant, org creates and deletes and signed workspace calls to
 * the control plane, through any replica; meanwhile processes are SIGKILLed and started again on the same port, and
 * the emulators inject faults; behind the platform's back, resources of workspaces and orgs that do not exist are
 * leaked and live workspaces' containers and machines removed. Then the faults stop, every process is up, every
 * accepted operation reaches its terminal state, one reconcile runs on each service (orphan deletion on, no grace)
 * and reports exactly the leaked resources as orphans (deleted) and the removed ones as ghosts (marked failed, then
 * started again), and the world must be exact: every live workspace and org has exactly one resource of each kind,
 * nothing else exists, no orphan or ghost remains, and every status agrees with its backend. `CHAOS_SEED=<n>` replays the driver's decisions of a run.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AwsEmulator, startAwsEmulator } from "@molecule/aws-emulator";
import { resourceName } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CP_MIGRATIONS } from "../apps/control-plane/src/db/migrations.ts";
import {
  createNetwork,
  TEST_CREDENTIALS,
  TEST_REGION,
} from "../packages/provisioner-core/src/ec2/testkit.ts";
import { type FlyHarness, startFlyHarness } from "../packages/provisioner-core/src/flyio/testkit.ts";
import { ControlPlaneDriver, type CpOrg } from "../test-support/chaos/cp-driver.ts";
import { FaultInjector } from "../test-support/chaos/faults.ts";
import { Fleet, type Replica, type RunningProcess } from "../test-support/chaos/fleet.ts";
import { Ledger, type TrackedOperation } from "../test-support/chaos/ledger.ts";
import { chaosSeed, SeededRandom } from "../test-support/chaos/random.ts";
import { Saboteur } from "../test-support/chaos/sabotage.ts";
import { TenantDriver } from "../test-support/chaos/tenant-driver.ts";
import { controlPlaneOperationState, tenantOperationState } from "../test-support/chaos/terminal.ts";
import { dockerWorld, ec2World, flyWorld } from "../test-support/chaos/world.ts";
import { startControlPlaneProcess } from "../test-support/control-plane.ts";
import { removeDeployment } from "../test-support/docker-platform.ts";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import {
  freePort,
  killAllPlatformProcesses,
  startPlatformProcess,
  uniqueDeployment,
} from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const SEED = chaosSeed(process.env.CHAOS_SEED);
const CHAOS_MS = Number(process.env.CHAOS_SECONDS ?? "180") * 1000;
/** A replica is SIGKILLed every KILL_EVERY_MS (a random point in it) and started again after RESTART_AFTER_MS. */
const KILL_EVERY_MS = [8_000, 20_000] as const;
const RESTART_AFTER_MS = [300, 3_000] as const;
/** How long a kill meant to land mid-operation waits for the replica to be running one. */
const MID_OPERATION_WAIT_MS = 5_000;
/** One fault is armed every FAULT_EVERY_MS; the next matching request consumes it. */
const FAULT_EVERY_MS = [1_500, 4_000] as const;
/** Resources leaked behind the platform's back during the chaos, per backend (each at a random moment). */
const DOCKER_LEAKS = [1, 2] as const;
const FLY_LEAKS = [1, 2] as const;
/** Pause of each driver between its requests. */
const THINK_MS = [200, 1_500] as const;
/** Convergence, not timing: long enough for a loaded 2-core machine, never part of what is asserted. */
const SETTLE_MS = 300_000;
const READY_MS = 180_000;

const FLY_APP = "molecule-ws-chaos";
const FLY_TOKEN = `fly-chaos-${randomBytes(8).toString("hex")}`;
const ENVIRONMENT = "test";

const docker = new Dockerode();
const deployment = uniqueDeployment();
const rng = new SeededRandom(SEED);
const ledger = new Ledger();

let aws: AwsEmulator;
let harness: FlyHarness;
let cpDb: TestDatabase;
let tenantDb: TestDatabase;
let cpSql: postgres.Sql;
let tenantSql: postgres.Sql;
let fleet: Fleet;
let faults: FaultInjector;
let tenant: TenantDriver;
let cp: ControlPlaneDriver;
let saboteur: Saboteur;
const adminToken = `adm_${randomBytes(16).toString("hex")}`;
const cpAdminToken = `mca_${randomBytes(16).toString("hex")}`;
const sharedSecret = randomBytes(32).toString("hex");
const started = Date.now();
/** Each replica's data folder, removed at the end. */
const dataDirs: string[] = [];
let killedMidOperation = 0;
const at = () => `+${((Date.now() - started) / 1000).toFixed(1)}s`;

beforeAll(async () => {
  console.log(`chaos: seed ${SEED} (replay with CHAOS_SEED=${SEED}), ${CHAOS_MS / 1000} s`);
  aws = await startAwsEmulator();
  const network = await createNetwork(aws.endpoint, `chaos-${randomBytes(3).toString("hex")}`);
  harness = await startFlyHarness({ emulator: { token: FLY_TOKEN, apps: [FLY_APP] } });
  cpDb = await createTestDatabase({ migrations: CP_MIGRATIONS });
  tenantDb = await createTestDatabase();
  cpSql = postgres(cpDb.url, { max: 2, onnotice: () => {} });
  tenantSql = postgres(tenantDb.url, { max: 2, onnotice: () => {} });
  faults = new FaultInjector(harness.emulator, aws);
  saboteur = new Saboteur({
    docker,
    dockerImage: `molecule/workspace-echo:${process.env.WORKSPACE_IMAGE_TAG ?? "latest"}`,
    tenantOrgId: "org_local",
    fly: { url: harness.emulator.url, token: FLY_TOKEN, app: FLY_APP },
    aws: { endpoint: aws.endpoint, imageId: network.imageId, subnetId: network.subnetId },
    scope: { deployment, environment: ENVIRONMENT },
  });

  // What both services share: quick takeover of a killed process's operations, the reconciler only on demand,
  // deleting every orphan it finds (no grace: it runs once everything has settled).
  const common = {
    HOST: "127.0.0.1",
    MOLECULE_DEPLOYMENT: deployment,
    MOLECULE_ENV: ENVIRONMENT,
    OPERATION_LEASE_SECONDS: "2",
    RECONCILE_INTERVAL: "24h",
    RECONCILE_DELETE_ORPHANS: "true",
    ORPHAN_GRACE: "0",
    LOG_LEVEL: "info",
  };
  const [tenantA, tenantB, cpA, cpB] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const tenantEnv = {
    ...common,
    DATABASE_URL: tenantDb.url,
    CONTAINER_BACKEND: "docker",
    WORKSPACE_NETWORK: "host",
    WORKSPACE_IMAGE_TAG: process.env.WORKSPACE_IMAGE_TAG ?? "latest",
    ADMIN_TOKEN: adminToken,
    SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
    // agents heartbeat every 2 s; one silent for 6 s is offline, and online again with its next heartbeat
    HEARTBEAT_STALE_AFTER: "6",
    STATUS_SWEEP_INTERVAL: "1",
  };
  const cpEnv = {
    ...common,
    DATABASE_URL: cpDb.url,
    CP_PUBLIC_URL: `http://127.0.0.1:${cpA}`,
    CP_ADMIN_API_TOKEN: cpAdminToken,
    PROVISION_SHARED_SECRET: sharedSecret,
    CP_SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
    CP_WORKSPACE_BACKEND: "flyio",
    FLY_API_TOKEN: FLY_TOKEN,
    FLY_WORKSPACE_APP: FLY_APP,
    FLY_API_BASE_URL: harness.emulator.url,
    CP_TENANT_BACKEND: "ec2",
    AWS_REGION: TEST_REGION,
    AWS_ENDPOINT_URL: aws.endpoint,
    AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
    EC2_VPC_ID: network.vpcId,
    EC2_SUBNET_ID: network.subnetId,
    EIC_ENDPOINT_SG_ID: network.eicGroupId,
    EC2_TENANT_INGRESS_SG_IDS: network.tenantGroupId,
    EC2_TENANT_IAM_PROFILE: network.instanceProfile,
    EC2_AMI: network.imageId,
    TENANT_IMAGE: "ghcr.io/molecule/tenant-platform:chaos",
    EC2_TERMINATE_DEADLINE_SECONDS: "60",
  };
  const tenantReplica = (name: string, port: number) => {
    const dataDir = mkdtempSync(join(tmpdir(), `molecule-chaos-${name}-`));
    dataDirs.push(dataDir);
    return {
      name,
      service: "tenant" as const,
      url: `http://127.0.0.1:${port}`,
      start: (): Promise<RunningProcess> =>
        startPlatformProcess({
          env: { ...tenantEnv, PORT: String(port) },
          dataDir,
          readyTimeoutMs: READY_MS,
        }),
    };
  };
  const cpReplica = (name: string, port: number) => {
    const dataDir = mkdtempSync(join(tmpdir(), `molecule-chaos-${name}-`));
    dataDirs.push(dataDir);
    return {
      name,
      service: "control-plane" as const,
      url: `http://127.0.0.1:${port}`,
      start: (): Promise<RunningProcess> =>
        startControlPlaneProcess({
          env: { ...cpEnv, PORT: String(port) },
          dataDir,
          readyTimeoutMs: READY_MS,
        }),
    };
  };
  fleet = new Fleet([
    tenantReplica("tenant-a", tenantA),
    tenantReplica("tenant-b", tenantB),
    cpReplica("cp-a", cpA),
    cpReplica("cp-b", cpB),
  ]);
  await fleet.ensureAllUp();

  tenant = new TenantDriver({
    urls: fleet.of("tenant").map((replica) => replica.url),
    adminToken,
    ledger,
    maxLive: 6,
  });
  cp = new ControlPlaneDriver({
    urls: fleet.of("control-plane").map((replica) => replica.url),
    adminToken: cpAdminToken,
    sharedSecret,
    ledger,
    maxOrgs: 3,
    maxWorkspacesPerOrg: 3,
    async tenantProvisioned(orgId) {
      const [row] = await cpSql<{ status: string }[]>`
        SELECT status FROM cp_operations WHERE org_id = ${orgId} AND kind = 'provision_tenant'
        ORDER BY created_at DESC LIMIT 1`;
      return row?.status === "succeeded";
    },
  });
}, 300_000);

afterAll(async () => {
  faults?.stop();
  await killAllPlatformProcesses();
  await removeDeployment(docker, deployment).catch((error: unknown) => console.error(error));
  await cpSql?.end();
  await tenantSql?.end();
  await harness?.close();
  await aws?.close();
  await cpDb?.drop();
  await tenantDb?.drop();
  for (const dir of dataDirs) rmSync(dir, { recursive: true, force: true });
}, 180_000);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Sleeps `ms`, or until the chaos window closes if that comes first. */
const sleepWithin = (ms: number, until: number) => sleep(Math.max(0, Math.min(ms, until - Date.now())));

/** Runs `act` with pauses until the chaos window closes; the request in flight then still gets its answer. */
async function actor(random: SeededRandom, until: number, act: (random: SeededRandom) => Promise<void>) {
  while (Date.now() < until) {
    await act(random);
    await sleepWithin(random.ms(...THINK_MS), until);
  }
}

/**
 * SIGKILLs a random replica at random moments and starts it again on the same port after a pause, without waiting for
 * it to be up before the next kill (so both replicas of a service may be down at once).
 */
async function killer(random: SeededRandom, until: number) {
  const restarts: Promise<unknown>[] = [];
  for (;;) {
    await sleepWithin(random.ms(...KILL_EVERY_MS), until);
    if (Date.now() >= until) break;
    const replica = random.pick(fleet.replicas);
    if (!replica.isUp) continue;
    // Half the kills wait (a few seconds at most) for the replica to be in the middle of an operation.
    const during = random.chance(0.5) ? await untilRunningAnOperation(replica) : null;
    await replica.kill();
    if (during) killedMidOperation += 1;
    const downFor = random.ms(...RESTART_AFTER_MS);
    console.log(
      `chaos: ${at()} SIGKILLed ${replica.name}${during ? ` running ${during}` : ""}; starting it again in ${downFor} ms`,
    );
    restarts.push(sleep(downFor).then(() => replica.start()));
  }
  await Promise.all(restarts);
}

/** Waits until the replica holds a running operation's lease (its id), for up to MID_OPERATION_WAIT_MS (null). */
async function untilRunningAnOperation(replica: Replica): Promise<string | null> {
  const pid = replica.process?.pid;
  if (pid === undefined) return null;
  const sql = replica.service === "tenant" ? tenantSql : cpSql;
  const table = replica.service === "tenant" ? "operations" : "cp_operations";
  const deadline = Date.now() + MID_OPERATION_WAIT_MS;
  while (Date.now() < deadline) {
    const [running] = await sql<{ id: string }[]>`
      SELECT id FROM ${sql(table)} WHERE status = 'running' AND locked_by LIKE ${`${pid}-%`} LIMIT 1`;
    if (running) return running.id;
    await sleep(25);
  }
  return null;
}

/** Notes each accepted operation's end as it comes (an org's delete removes its operations' rows with it). */
async function watcher(until: number) {
  while (Date.now() < until) {
    await noteTerminalOperations();
    await sleepWithin(2_000, until);
  }
}

async function noteTerminalOperations(): Promise<void> {
  for (const operation of ledger.pending()) {
    const terminal = await finalStateOf(operation);
    if (terminal) Object.assign(operation, terminal);
  }
}

async function injector(random: SeededRandom, until: number) {
  while (Date.now() < until) {
    await sleepWithin(random.ms(...FAULT_EVERY_MS), until);
    if (Date.now() < until) faults.injectOne(random);
  }
}

/**
 * Leaks docker workspaces and Fly machines for workspaces that do not exist, each at a random moment of the chaos
 * window (nothing reconciles during it: the pass runs on demand only, so each is still there for the cleaning pass).
 */
async function leaker(random: SeededRandom, until: number) {
  const leaks = [
    ...Array.from({ length: random.int(...DOCKER_LEAKS) }, () => "docker" as const),
    ...Array.from({ length: random.int(...FLY_LEAKS) }, () => "fly" as const),
  ];
  for (const kind of leaks) {
    await sleepWithin(random.ms(1_000, CHAOS_MS / leaks.length), until);
    if (kind === "docker") await saboteur.leakDockerWorkspace();
    else await saboteur.leakFlyMachine();
    console.log(`chaos: ${at()} leaked a ${kind} workspace's resources`);
  }
}

/**
 * An org that was deleted (one made and deleted now when the run deleted none), for the EC2 leak: its tombstone names
 * it, so the reconciler can sweep what is tagged with it.
 */
async function aDeletedOrg(): Promise<CpOrg> {
  const deleted = [...cp.orgs.values()].filter((org) => org.deleted);
  if (deleted.length > 0) return rng.pick(deleted);
  const before = new Set(cp.orgs.keys());
  await cp.createOrg(rng);
  await everyOperationTerminal();
  const org = [...cp.orgs.values()].find((candidate) => !before.has(candidate.slug));
  if (!org) throw new Error("the org made for the EC2 leak was not created");
  await cp.deleteOrg(rng, org);
  await everyOperationTerminal();
  return org;
}

/**
 * Ghosts, made once everything is calm (no operation runs on them, so the pass judges them and nothing else changes
 * them first): one online tenant workspace's container removed, one running control-plane workspace's machine
 * destroyed; then waits until the tenant's agent is offline and the machine is gone from the app's listing.
 */
async function makeGhosts(
  workspaces: { id: string; status: string }[],
  cpWorkspaces: Map<CpOrg, { workspace_id: string; state: string }[]>,
): Promise<void> {
  const online = workspaces.filter((w) => w.status === "online");
  const tenantGhost = online.length > 0 ? rng.pick(online).id : null;
  if (tenantGhost) await saboteur.removeContainer(tenantGhost);
  const running = [...cpWorkspaces.values()].flat().filter((w) => w.state === "running");
  const cpGhost = running.length > 0 ? rng.pick(running).workspace_id : null;
  const machine = cpGhost ? flyWorld(harness.emulator, FLY_APP).machines.get(cpGhost)?.[0] : undefined;
  if (cpGhost && machine) await saboteur.destroyFlyMachine(cpGhost, machine.id);
  await waitFor(
    "each ghost's resource gone and the tenant's agent offline",
    async () => {
      const tenantSettled =
        !tenantGhost || (await tenantWorkspaces()).find((w) => w.id === tenantGhost)?.status === "offline";
      const flySettled = !cpGhost || !flyWorld(harness.emulator, FLY_APP).machines.has(cpGhost);
      return tenantSettled && flySettled ? true : undefined;
    },
    SETTLE_MS,
    500,
  );
}

async function finalStateOf(operation: TrackedOperation) {
  return operation.service === "tenant"
    ? tenantOperationState(tenant, operation)
    : controlPlaneOperationState(cpSql, operation);
}

/** Waits until every accepted operation has ended; on timeout names each one still open. */
async function everyOperationTerminal(): Promise<void> {
  await waitFor(
    "every accepted operation to reach a terminal state",
    async () => {
      await noteTerminalOperations();
      return ledger.pending().length === 0 ? true : undefined;
    },
    SETTLE_MS,
    1_000,
  ).catch((error: unknown) => {
    const open = ledger.pending().map((o) => `${o.service} ${o.kind} ${o.id} on ${o.subject}`);
    throw new Error(`${(error as Error).message}\nstill open:\n${open.join("\n")}`);
  });
}

/** Waits until every agent is back online (kills of its platform make it offline for a while) or stopped. */
async function settledTenantWorkspaces(): Promise<{ id: string; status: string }[]> {
  return waitFor(
    "every tenant workspace to be online or stopped",
    async () => {
      const list = await tenantWorkspaces();
      return list.every((w) => w.status === "online" || w.status === "stopped") ? list : undefined;
    },
    SETTLE_MS,
    1_000,
  ).catch(async (error: unknown) => {
    throw new Error(`${(error as Error).message}\n${JSON.stringify(await tenantWorkspaces(), null, 1)}`);
  });
}

/** The tenant's workspaces that are not removed, as its API shows them. */
async function tenantWorkspaces(): Promise<{ id: string; status: string; statusReason: string | null }[]> {
  const { status, body } = await tenant.get("/workspaces");
  if (status !== 200) throw new Error(`GET /workspaces answered ${status}`);
  return body.workspaces;
}

/** Each live org's workspaces as its tenant sees them (destroyed ones are not listed). */
async function controlPlaneWorkspaces(): Promise<Map<CpOrg, { workspace_id: string; state: string }[]>> {
  const byOrg = new Map<CpOrg, { workspace_id: string; state: string }[]>();
  for (const org of cp.liveOrgs()) {
    const { status, body } = await cp.listWorkspaces(org);
    if (status !== 200) throw new Error(`GET /cp/workspaces for ${org.slug} answered ${status}`);
    byOrg.set(org, body.workspaces);
  }
  return byOrg;
}

/**
 * A workspace whose operation failed for good (its attempts spent on killed processes or faults) is started again,
 * and an org whose tenant provision failed is deleted, as an operator would; each is counted in the table.
 */
async function recoverFailures(): Promise<string[]> {
  const recovered: string[] = [];
  for (const workspace of await tenantWorkspaces()) {
    if (workspace.status !== "failed") continue;
    recovered.push(`tenant workspace ${workspace.id}: ${workspace.statusReason}`);
    await tenant.lifecycle(rng, "start", { id: workspace.id, deleted: false });
  }
  for (const [org, workspaces] of await controlPlaneWorkspaces()) {
    const { body } = await cp.adminGet(`/cp/orgs/${org.slug}`);
    if (body.org.status === "failed") {
      recovered.push(`org ${org.slug}: ${body.provision_status?.last_error}`);
      await cp.deleteOrg(rng, org);
      continue;
    }
    for (const workspace of workspaces) {
      if (workspace.state !== "failed") continue;
      recovered.push(`control-plane workspace ${workspace.workspace_id} of ${org.slug}`);
      const known = org.workspaces.get(workspace.workspace_id);
      if (known) await cp.workspaceCall(rng, "start", org, known);
    }
  }
  return recovered;
}

function withOutputs(error: unknown): Error {
  const failed = error instanceof Error ? error : new Error(String(error));
  failed.message = `${failed.message}\n(seed ${SEED}; replay with CHAOS_SEED=${SEED})\n${fleet?.outputs() ?? ""}`;
  return failed;
}

describe("chaos: two control planes and two tenant replicas on one PostgreSQL, processes killed, faults injected", () => {
  it(
    "every request ends, every live workspace and org has exactly its resources, the leaked ones cleaned as orphans, the removed ones found as ghosts",
    { timeout: CHAOS_MS + 15 * 60_000 },
    async () => {
      try {
        // 1. Chaos.
        const until = Date.now() + CHAOS_MS;
        await Promise.all([
          actor(rng.fork(), until, (r) => tenant.act(r)),
          actor(rng.fork(), until, (r) => tenant.act(r)),
          actor(rng.fork(), until, (r) => cp.act(r)),
          actor(rng.fork(), until, (r) => cp.act(r)),
          killer(rng.fork(), until),
          injector(rng.fork(), until),
          watcher(until),
          leaker(rng.fork(), until),
        ]);
        const chaosEnded = Date.now();

        // 2. Calm: no more faults, every process up, every accepted operation ended; then the failures recovered.
        faults.stop();
        await fleet.ensureAllUp();
        await everyOperationTerminal();
        const recovered = await recoverFailures();
        await everyOperationTerminal();

        // 3. Every agent back online (kills of its platform make it offline for a while) or stopped; then, behind
        // the platform's back, an EC2 tenant instance leaked for a deleted org (now: faults are off, so one
        // RunInstances makes exactly one) and the ghosts made.
        await makeGhosts(await settledTenantWorkspaces(), await controlPlaneWorkspaces());
        await saboteur.leakEc2Tenant(await aDeletedOrg());

        // 4. One reconcile per service, orphan deletion on: exactly the leaked resources are orphans, all deleted;
        // exactly the ghosts made are ghosts, each workspace marked failed.
        const tenantReplica = fleet.byName("tenant-a");
        const cpReplica = fleet.byName("cp-a");
        const tenantReport = await fetchJson(tenantReplica.url, adminToken, "POST", "/admin/reconcile");
        const cpReport = await fetchJson(cpReplica.url, cpAdminToken, "POST", "/cp/admin/reconcile");
        expect(tenantReport.status, JSON.stringify(tenantReport.body)).toBe(200);
        expect(cpReport.status, JSON.stringify(cpReport.body)).toBe(200);
        for (const [service, report] of [
          ["tenant", tenantReport.body],
          ["control-plane", cpReport.body],
        ] as const) {
          expect(report.errors, service).toEqual([]);
          const orphans: { workspace_id: string | null; org_id: string | null; deleted: boolean }[] =
            report.orphanList;
          expect(orphans.map((o) => o.workspace_id ?? o.org_id).sort(), service).toEqual(
            saboteur.expectedOrphans(service),
          );
          expect(
            orphans.filter((o) => !o.deleted),
            service,
          ).toEqual([]);
          // a ghost is a status that disagrees with its backend
          const ghosts: { id: string; action: string }[] = report.ghostList;
          expect(
            ghosts.map((g) => `${g.id} ${g.action}`),
            service,
          ).toEqual(
            saboteur.ghosts.filter((g) => g.service === service).map((g) => `${g.workspaceId} marked_failed`),
          );
        }
        const liveTenantNow = await tenantWorkspaces();
        for (const ghost of saboteur.ghosts.filter((g) => g.service === "tenant")) {
          expect(liveTenantNow.find((w) => w.id === ghost.workspaceId)).toMatchObject({
            status: "failed",
            statusReason: expect.stringContaining("the reconciler found no docker"),
          });
        }
        const cpStatesNow = new Map(
          [...(await controlPlaneWorkspaces()).values()].flat().map((w) => [w.workspace_id, w.state]),
        );
        for (const ghost of saboteur.ghosts.filter((g) => g.service === "control-plane")) {
          expect(cpStatesNow.get(ghost.workspaceId), ghost.workspaceId).toBe("failed");
        }

        // The ghosts recovered as any failed workspace is (started again: its container or machine is made anew).
        recovered.push(...(await recoverFailures()));
        await everyOperationTerminal();
        const workspaces = await settledTenantWorkspaces();
        const cpWorkspaces = await controlPlaneWorkspaces();

        // 5. Nothing remains: a second read of what the reconcilers see, and the stats.
        const tenantAgain = await fetchJson(tenantReplica.url, adminToken, "POST", "/admin/reconcile");
        const cpAgain = await fetchJson(cpReplica.url, cpAdminToken, "POST", "/cp/admin/reconcile");
        // (read through the other replica: every replica's stats show the newest pass, whoever ran it)
        const tenantStats = await fetchJson(fleet.byName("tenant-b").url, adminToken, "GET", "/admin/stats");
        const cpStats = await fetchJson(fleet.byName("cp-b").url, cpAdminToken, "GET", "/cp/admin/stats");
        for (const [name, again, stats] of [
          ["tenant", tenantAgain, tenantStats],
          ["control plane", cpAgain, cpStats],
        ] as const) {
          expect(again.body.orphanList, name).toEqual([]);
          expect(again.body.ghostList, name).toEqual([]);
          expect(stats.body, name).toMatchObject({ orphans: 0, ghosts: 0 });
          expect(stats.body.lastReconcile.at, name).toBe(again.body.at);
        }

        // 6. The backends, read directly.
        // Docker: one container and one volume per live tenant workspace, its status the container's; nothing else.
        const dockerNow = await dockerWorld(docker, deployment);
        const liveTenant = new Map(workspaces.map((w) => [w.id, w.status]));
        for (const [id, status] of liveTenant) {
          const containers = dockerNow.containers.get(id) ?? [];
          expect(
            containers.map((c) => c.name),
            id,
          ).toEqual([resourceName(id)]);
          expect(dockerNow.volumes.get(id), id).toEqual([resourceName(id)]);
          expect(containers[0]?.running, `${id} is ${status}`).toBe(status === "online");
        }
        expect([...dockerNow.containers.keys()].filter((id) => !liveTenant.has(id))).toEqual([]);
        expect([...dockerNow.volumes.keys()].filter((id) => !liveTenant.has(id))).toEqual([]);
        for (const workspace of tenant.workspaces.values()) {
          if (workspace.deleted) expect(liveTenant.has(workspace.id), workspace.id).toBe(false);
        }

        // Fly: one machine (with its one volume) per live control-plane workspace, started ↔ running.
        const flyNow = flyWorld(harness.emulator, FLY_APP);
        const liveCp = new Map<string, string>();
        for (const list of cpWorkspaces.values()) for (const w of list) liveCp.set(w.workspace_id, w.state);
        for (const [id, state] of liveCp) {
          expect(["running", "stopped"], `${id} is ${state}`).toContain(state);
          const machines = flyNow.machines.get(id) ?? [];
          expect(machines.length, `machines of ${id}`).toBe(1);
          expect(machines[0]?.state, `${id} is ${state}`).toBe(state === "running" ? "started" : "stopped");
          expect(flyNow.volumes.map((v) => v.id)).toContain(machines[0]?.volumeId);
        }
        expect([...flyNow.machines.keys()].filter((id) => !liveCp.has(id))).toEqual([]);
        expect(flyNow.volumes.length).toBe(liveCp.size);
        for (const org of cp.orgs.values()) {
          for (const w of org.workspaces.values()) {
            if (w.destroyed || org.deleted) expect(liveCp.has(w.id), w.id).toBe(false);
          }
        }
        expect(harness.emulator.violations).toEqual([]);

        // EC2: one running tenant instance per live org, nothing of a deleted org (instance, group, bundle).
        const ec2Now = await ec2World(aws.endpoint, deployment);
        const liveOrgs = new Set(cp.liveOrgs().map((org) => org.id));
        for (const org of cp.liveOrgs()) {
          const { body } = await cp.adminGet(`/cp/orgs/${org.slug}`);
          expect(["provisioning", "ready"], org.slug).toContain(body.org.status);
          expect(body.org.status === "ready", org.slug).toBe(org.ready);
          const instances = ec2Now.instances.get(org.id) ?? [];
          expect(
            instances.map((i) => i.State?.Name),
            org.slug,
          ).toEqual(["running"]);
          expect(ec2Now.secretsByOrg.get(org.id)?.length, org.slug).toBe(1);
        }
        expect([...ec2Now.instances.keys()].filter((id) => !liveOrgs.has(id))).toEqual([]);
        expect([...ec2Now.groupsByOrg.keys()].filter((id) => !liveOrgs.has(id))).toEqual([]);
        expect([...ec2Now.secretsByOrg.keys()].filter((id) => !liveOrgs.has(id))).toEqual([]);
        // none of the leaked resources remains
        for (const leak of saboteur.leaks) {
          const left =
            leak.backend === "docker"
              ? [
                  ...(dockerNow.containers.get(leak.owner) ?? []),
                  ...(dockerNow.volumes.get(leak.owner) ?? []),
                ]
              : leak.backend === "flyio"
                ? (flyNow.machines.get(leak.owner) ?? [])
                : (ec2Now.instances.get(leak.owner) ?? []);
          expect(left, `${leak.backend} ${leak.owner}`).toEqual([]);
        }
        for (const org of cp.orgs.values()) {
          if (!org.deleted) continue;
          const { body } = await cp.adminGet(`/cp/orgs/${org.slug}`);
          expect(body.org.status, org.slug).toBe("deleted");
        }

        // The resource audit agrees: each live workspace's (and org's) compute resource is claimed with the id the
        // backend shows, and no open claim names anything that is gone.
        const tenantAudit = await tenantSql<
          { subject_id: string; kind: string; provider_id: string | null }[]
        >`
          SELECT workspace_id AS subject_id, kind, provider_id FROM workspace_resources WHERE state <> 'released'`;
        for (const row of tenantAudit) expect(liveTenant.has(row.subject_id), JSON.stringify(row)).toBe(true);
        for (const id of liveTenant.keys()) {
          const claimed = tenantAudit.filter((row) => row.subject_id === id && row.kind === "container");
          expect(
            claimed.map((row) => row.provider_id),
            id,
          ).toEqual([dockerNow.containers.get(id)?.[0]?.id]);
        }
        const cpAudit = await cpSql<{ subject_id: string; kind: string; provider_id: string | null }[]>`
          SELECT subject_id, kind, provider_id FROM cp_tenant_resources WHERE state <> 'released'`;
        for (const row of cpAudit) {
          expect(liveCp.has(row.subject_id) || liveOrgs.has(row.subject_id), JSON.stringify(row)).toBe(true);
        }
        for (const id of liveCp.keys()) {
          const claimed = cpAudit.filter((row) => row.subject_id === id && row.kind === "fly_machine");
          expect(
            claimed.map((row) => row.provider_id),
            id,
          ).toEqual([flyNow.machines.get(id)?.[0]?.id]);
        }
        for (const id of liveOrgs) {
          const claimed = cpAudit.filter((row) => row.subject_id === id && row.kind === "ec2_instance");
          expect(
            claimed.map((row) => row.provider_id),
            id,
          ).toEqual([ec2Now.instances.get(id)?.[0]?.InstanceId]);
        }

        // 7. No process died on its own, no request was answered with a server error.
        expect(fleet.crashes.map((c) => `${c.replica} ${JSON.stringify(c.exit)}\n${c.output}`)).toEqual([]);
        const serverErrors = ledger.requestRows().filter((row) => /(^|, )5\d\d/.test(row.outcomes));
        expect(serverErrors).toEqual([]);

        // Operations that needed more than one attempt: taken over after a kill, or retried after a fault.
        const [tenantRetried] = await tenantSql<{ n: number }[]>`
          SELECT count(*)::int AS n FROM operations WHERE attempts > 1`;
        const [cpRetried] = await cpSql<{ n: number }[]>`
          SELECT count(*)::int AS n FROM cp_operations WHERE attempts > 1`;

        printTable({
          retried: { tenant: tenantRetried?.n ?? 0, cp: cpRetried?.n ?? 0 },
          chaosSeconds: (chaosEnded - (until - CHAOS_MS)) / 1000,
          totalSeconds: (Date.now() - started) / 1000,
          recovered,
          reports: { tenant: tenantReport.body, cp: cpReport.body },
          live: { tenant: liveTenant.size, cp: liveCp.size, orgs: liveOrgs.size },
        });
      } catch (error) {
        throw withOutputs(error);
      }
    },
  );
});

async function fetchJson(url: string, token: string, method: string, path: string) {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(120_000),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

function printTable(figures: {
  retried: { tenant: number; cp: number };
  chaosSeconds: number;
  totalSeconds: number;
  recovered: string[];
  // biome-ignore lint/suspicious/noExplicitAny: reports are printed field by field
  reports: { tenant: any; cp: any };
  live: { tenant: number; cp: number; orgs: number };
}) {
  const fault = faults.summary();
  const rows: [string, string][] = [
    ["seed", `${SEED} (CHAOS_SEED=${SEED})`],
    [
      "duration",
      `${figures.chaosSeconds.toFixed(0)} s of chaos, ${figures.totalSeconds.toFixed(0)} s in all`,
    ],
    [
      "requests",
      `${ledger.totalRequests()} sent, every one answered (${ledger.resends} sent again after no answer)`,
    ],
    ...ledger.requestRows().map(({ kind, outcomes }): [string, string] => [`  ${kind}`, outcomes]),
    ["operations", `${ledger.operations.length} accepted, every one terminal`],
    ...ledger.operationRows().map(({ kind, outcomes }): [string, string] => [`  ${kind}`, outcomes]),
    [
      "  retried",
      `tenant ${figures.retried.tenant}, control plane ${figures.retried.cp} ran more than one attempt (kills, faults; a deleted org's are gone)`,
    ],
    [
      "kills",
      `${fleet.kills} SIGKILLs (${killedMidOperation} while the replica ran an operation): ${fleet.replicas.map((r) => `${r.name} ${r.kills}`).join(", ")}`,
    ],
    [
      "faults",
      `Fly ${fault.fly.hit} of ${fault.fly.armed} armed hit, AWS ${fault.aws.hit} of ${fault.aws.armed}`,
    ],
    ["  armed", fault.byKind],
    ["sabotage", saboteur.summary()],
    ["recovered", figures.recovered.length === 0 ? "none failed" : figures.recovered.join("; ")],
    [
      "orphans",
      `tenant ${figures.reports.tenant.orphans} found, ${figures.reports.tenant.deleted} cleaned; control plane ${figures.reports.cp.orphans} found, ${figures.reports.cp.deleted} cleaned`,
    ],
    ["ghosts", `tenant ${figures.reports.tenant.ghosts}, control plane ${figures.reports.cp.ghosts}`],
    [
      "at the end",
      `${figures.live.tenant} docker workspaces, ${figures.live.cp} Fly workspaces, ${figures.live.orgs} orgs on EC2; orphans 0, ghosts 0`,
    ],
  ];
  const width = Math.max(...rows.map(([label]) => label.length));
  console.log(["chaos run", ...rows.map(([label, value]) => `${label.padEnd(width)}  ${value}`)].join("\n"));
}

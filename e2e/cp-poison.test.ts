/**
 * A poison operation cannot stop the control plane. One org's workspace provision kills the process every time it
 * runs: test-support/poison.ts throws outside any handler when a Fly request names that workspace. The test restarts
 * the process each time it dies, as a supervisor would. Each attempt is counted at claim, so the process dies exactly
 * OPERATION_MAX_ATTEMPTS times; the next process quarantines the operation (failed, code `quarantined`, the workspace
 * failed) and stays up. Another org's provision that was in flight when the first process died is recovered alone
 * and succeeds, and new work of both orgs runs afterwards.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CpOperationView, createIdGenerator } from "@molecule/contracts";
import type { ControlPlaneClient } from "@molecule/provisioner-core";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CP_MIGRATIONS } from "../apps/control-plane/src/db/migrations.ts";
import { type FlyHarness, startFlyHarness } from "../packages/provisioner-core/src/flyio/testkit.ts";
import { signedTenantClient } from "../test-support/control-plane.ts";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import {
  CONTROL_PLANE_MAIN,
  callJson,
  freePort,
  killAllPlatformProcesses,
  type PlatformExit,
  REPO_ROOT,
  type SpawnedPlatform,
  spawnPlatform,
  uniqueDeployment,
  waitUntilHealthy,
} from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const FLY_APP = "molecule-ws-poison";
const FLY_TOKEN = `fly-e2e-${randomBytes(8).toString("hex")}`;
const MAX_ATTEMPTS = 3;
/** Longer than this whole file may run: a held create never lands while the test looks (harness.close ends it). */
const HELD_MS = 10 * 60_000;
const POISON = [join(REPO_ROOT, "test-support/poison.ts")];

let harness: FlyHarness;
let fly: FlyHarness["emulator"];
let cpDb: TestDatabase;
let sql: postgres.Sql;
/** One identity for every process of the file: the same database, port, deployment, secrets and poison. */
let env: Record<string, string>;
/** Every process of the file, in start order, for the failure message. */
const processes: SpawnedPlatform[] = [];

beforeAll(async () => {
  harness = await startFlyHarness({ emulator: { token: FLY_TOKEN, apps: [FLY_APP] } });
  fly = harness.emulator;
  cpDb = await createTestDatabase({ migrations: CP_MIGRATIONS });
  sql = postgres(cpDb.url, { max: 1, onnotice: () => {} });
}, 120_000);

afterAll(async () => {
  await killAllPlatformProcesses();
  await sql?.end();
  await harness?.close();
  await cpDb?.drop();
});

async function operationRow(id: string) {
  const [row] = await sql<{ status: string; attempts: number; error: { code: string } | null }[]>`
    SELECT status, attempts, error FROM cp_operations WHERE id = ${id}`;
  if (!row) throw new Error(`operation ${id} not found`);
  return row;
}

const spec = (workspaceId: string) => ({
  workspace_id: workspaceId,
  runtime: "hermes",
  tier: 2,
  env: { WORKSPACE_ID: workspaceId },
  secret_keys: [],
  metadata: {},
});

async function provision(client: ControlPlaneClient, workspaceId: string): Promise<string> {
  const accepted = await client.call<{ operation: CpOperationView }>({
    op: "provision",
    method: "POST",
    path: "/cp/workspaces/provision",
    body: spec(workspaceId),
    idempotencyKey: `provision-${workspaceId}`,
  });
  expect(accepted.status).toBe(202);
  return accepted.body.operation.id;
}

async function operation(client: ControlPlaneClient, id: string) {
  const shown = await client.call<unknown>({ op: "operation", method: "GET", path: `/cp/operations/${id}` });
  return CpOperationView.parse(shown.body);
}

async function succeeded(client: ControlPlaneClient, id: string) {
  return waitFor(`operation ${id} to succeed`, async () => {
    const view = await operation(client, id);
    if (view.status === "failed") throw new Error(`operation ${id} failed: ${JSON.stringify(view.error)}`);
    return view.status === "succeeded" ? view : undefined;
  });
}

async function workspaceState(client: ControlPlaneClient, workspaceId: string) {
  const listed = await client.call<{ workspaces: { workspace_id: string; state: string }[] }>({
    op: "list",
    method: "GET",
    path: "/cp/workspaces",
  });
  return listed.body.workspaces.find((workspace) => workspace.workspace_id === workspaceId)?.state;
}

/** Starts a control plane on the file's database; a supervisor's restart is the same call. */
function spawnControlPlane(): SpawnedPlatform {
  const spawned = spawnPlatform(env, CONTROL_PLANE_MAIN, { imports: POISON });
  processes.push(spawned);
  return spawned;
}

function exited(spawned: SpawnedPlatform): boolean {
  return spawned.child.exitCode !== null || spawned.child.signalCode !== null;
}

/** Resolves with the process's exit, or with null once the operation has ended while the process runs. */
async function exitOrEnd(spawned: SpawnedPlatform, operationId: string): Promise<PlatformExit | null> {
  return waitFor(
    `the control plane to exit or operation ${operationId} to end`,
    async () => {
      if (exited(spawned)) return spawned.waitForExit();
      const row = await operationRow(operationId);
      return row.status === "failed" || row.status === "succeeded" ? null : undefined;
    },
    90_000,
    50,
  );
}

function withOutput(error: unknown): Error {
  const outputs = processes.map(
    (spawned, index) => `--- control plane ${index + 1} ---\n${spawned.output()}`,
  );
  return new Error(`${(error as Error).message}\n${outputs.join("\n")}`);
}

describe("a provision that kills the control plane every time it runs", () => {
  it("kills it OPERATION_MAX_ATTEMPTS times, then is quarantined; other orgs' work completes and the service stays up", async () => {
    const ids = createIdGenerator();
    const poisonId = ids.next("ws");
    const bystanderId = ids.next("ws");
    const sharedSecret = randomBytes(32).toString("hex");
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const adminToken = `mca_${randomBytes(16).toString("hex")}`;
    env = {
      DATABASE_URL: cpDb.url,
      HOST: "127.0.0.1",
      PORT: String(port),
      MOLECULE_DATA_DIR: mkdtempSync(join(tmpdir(), "molecule-cp-poison-")),
      MOLECULE_DEPLOYMENT: uniqueDeployment(),
      CP_ADMIN_API_TOKEN: adminToken,
      PROVISION_SHARED_SECRET: sharedSecret,
      CP_SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
      CP_WORKSPACE_BACKEND: "flyio",
      FLY_API_TOKEN: FLY_TOKEN,
      FLY_WORKSPACE_APP: FLY_APP,
      FLY_API_BASE_URL: fly.url,
      CP_TENANT_BACKEND: "external",
      TENANT_URL_TEMPLATE: `http://127.0.0.1:${await freePort()}`,
      OPERATION_LEASE_SECONDS: "2",
      OPERATION_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
      LOG_LEVEL: "info",
      MOLECULE_TEST_POISON_WORKSPACE_ID: poisonId,
    };
    const healthy = (spawned: SpawnedPlatform) =>
      waitUntilHealthy(spawned, { name: "control plane", url, adminToken, readyTimeoutMs: 60_000 });
    try {
      let current = spawnControlPlane();
      await healthy(current);

      const clients = new Map<string, ControlPlaneClient>();
      for (const slug of ["victim", "bystander"]) {
        const created = await callJson(url, adminToken, "POST", "/cp/orgs", { slug, name: slug });
        expect(created.status, JSON.stringify(created.body)).toBe(201);
        const client = signedTenantClient(
          url,
          sharedSecret,
          created.body.org.id,
          created.body.tenant_credential,
        );
        clients.set(slug, client);
      }
      const victim = clients.get("victim") as ControlPlaneClient;
      const bystander = clients.get("bystander") as ControlPlaneClient;
      await waitFor("the orgs' tenant provisions to finish", async () => {
        const [open] = await sql<{ count: number }[]>`
          SELECT count(*)::int AS count FROM cp_operations WHERE status IN ('pending', 'running')`;
        return open?.count === 0 ? true : undefined;
      });

      // The bystander's provision is in flight (Fly holds its machine create) when the poison kills the process.
      fly.inject({
        operation: "Machines_create",
        kind: "slow",
        delayMs: HELD_MS,
        when: (request) => JSON.stringify(request.body).includes(bystanderId),
      });
      const bystanderOperation = await provision(bystander, bystanderId);
      await waitFor("the bystander's machine create to be in flight", async () =>
        (fly.requestCounts().Machines_create ?? 0) >= 1 ? true : undefined,
      );
      // The answer may not get out before the process dies; the operation is committed before it runs.
      await provision(victim, poisonId).catch(() => undefined);
      const [poisonRow] = await sql<{ id: string }[]>`
        SELECT id FROM cp_operations WHERE workspace_id = ${poisonId}`;
      const poisonOperation = poisonRow?.id ?? "";
      expect(poisonOperation).toMatch(/^op_/);

      // The supervisor: whenever the control plane dies, start it again on the same database.
      const deaths: PlatformExit[] = [];
      for (;;) {
        const exit = await exitOrEnd(current, poisonOperation);
        if (!exit) break;
        deaths.push(exit);
        expect(exit.code, JSON.stringify(exit)).toBe(1);
        expect(current.output()).toContain(`Error: poison: a backend request for ${poisonId}`);
        expect(deaths.length, "the control plane kept dying").toBeLessThanOrEqual(MAX_ATTEMPTS);
        current = spawnControlPlane();
      }
      // Every attempt killed a process; the attempt after the last was never made.
      expect(deaths).toHaveLength(MAX_ATTEMPTS);
      await healthy(current);

      const quarantined = await operation(victim, poisonOperation);
      expect(quarantined.status).toBe("failed");
      expect(quarantined.error).toEqual({
        code: "quarantined",
        message: `attempt ${MAX_ATTEMPTS} of ${MAX_ATTEMPTS} never finished (the process running it stopped or hung); the operation was quarantined and will not run again`,
        retryable: false,
      });
      expect(await operationRow(poisonOperation)).toMatchObject({ attempts: MAX_ATTEMPTS });
      expect(await workspaceState(victim, poisonId)).toBe("failed");
      expect(current.output().match(/operation quarantined/g)).toHaveLength(1);
      // The poison never got past its first request: Fly has nothing of it.
      const poisonMachines = fly
        .machines(FLY_APP)
        .filter((machine) => JSON.stringify(machine.config.metadata).includes(poisonId));
      expect(poisonMachines).toEqual([]);

      // The bystander's provision died with the first process, was recovered alone and finished.
      const recovered = await succeeded(bystander, bystanderOperation);
      expect(recovered.steps.at(-1)?.name).toBe("machine_started");
      expect((await operationRow(bystanderOperation)).attempts).toBe(2);
      expect(await workspaceState(bystander, bystanderId)).toBe("running");

      // New work of both orgs runs on the process that quarantined the poison.
      const later = [
        [victim, ids.next("ws")],
        [bystander, ids.next("ws")],
      ] as const;
      for (const [client, workspaceId] of later) {
        await succeeded(client, await provision(client, workspaceId));
        expect(await workspaceState(client, workspaceId)).toBe("running");
      }
      expect(exited(current)).toBe(false);
      expect((await fetch(`${url}/health`)).status).toBe(200);
      expect((await current.kill("SIGTERM")).code).toBe(0);
      expect(fly.violations).toEqual([]);
    } catch (error) {
      throw withOutput(error);
    }
  }, 300_000);
});

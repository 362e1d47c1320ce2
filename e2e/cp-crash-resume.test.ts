/**
 * The control plane SIGKILLed in the middle of a workspace provision it runs for a tenant, on the Fly emulator:
 * the emulator holds machine creation (the create is received and never answered, as a hung Fly API would), the
 * process is killed once the volume exists and the create is in flight, and a new process on the same database
 * takes the operation over when its lease expires. It finishes with exactly one machine and one volume for the
 * workspace: nothing made twice, nothing leaked.
 */
import { randomBytes } from "node:crypto";
import { CpOperationView } from "@molecule/contracts";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CP_MIGRATIONS } from "../apps/control-plane/src/db/migrations.ts";
import { type FlyHarness, startFlyHarness } from "../packages/provisioner-core/src/flyio/testkit.ts";
import { type ControlPlaneProcess, startControlPlaneProcess } from "../test-support/control-plane.ts";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import { freePort, killAllPlatformProcesses, uniqueDeployment } from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const FLY_APP = "molecule-ws-crash";
const FLY_TOKEN = `fly-e2e-${randomBytes(8).toString("hex")}`;
/** Longer than this whole file may run: the held create never lands while the test looks (harness.close ends it). */
const HELD_MS = 10 * 60_000;

let harness: FlyHarness;
let fly: FlyHarness["emulator"];
let cpDb: TestDatabase;
let sql: postgres.Sql;
/** One identity for both processes: the same database, deployment, secrets and sealing key. */
let env: Record<string, string>;

beforeAll(async () => {
  harness = await startFlyHarness({ emulator: { token: FLY_TOKEN, apps: [FLY_APP] } });
  fly = harness.emulator;
  cpDb = await createTestDatabase({ migrations: CP_MIGRATIONS });
  sql = postgres(cpDb.url, { max: 1, onnotice: () => {} });
  env = {
    DATABASE_URL: cpDb.url,
    MOLECULE_DEPLOYMENT: uniqueDeployment(),
    CP_ADMIN_API_TOKEN: `mca_${randomBytes(16).toString("hex")}`,
    PROVISION_SHARED_SECRET: randomBytes(32).toString("hex"),
    CP_SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
    CP_WORKSPACE_BACKEND: "flyio",
    FLY_API_TOKEN: FLY_TOKEN,
    FLY_WORKSPACE_APP: FLY_APP,
    FLY_API_BASE_URL: fly.url,
    CP_TENANT_BACKEND: "external",
    TENANT_URL_TEMPLATE: `http://127.0.0.1:${await freePort()}`,
    OPERATION_LEASE_SECONDS: "2",
  };
}, 120_000);

afterAll(async () => {
  await killAllPlatformProcesses();
  await sql?.end();
  await harness?.close();
  await cpDb?.drop();
});

async function operationRow(id: string) {
  const [row] = await sql<{ status: string; attempts: number; steps: { name: string }[] }[]>`
    SELECT status, attempts, steps FROM cp_operations WHERE id = ${id}`;
  if (!row) throw new Error(`operation ${id} not found`);
  return row;
}

function withOutput(error: unknown, processes: [string, ControlPlaneProcess | undefined][]): Error {
  const outputs = processes.map(([name, cp]) => `--- ${name} ---\n${cp?.output() ?? "(not started)"}`);
  return new Error(`${(error as Error).message}\n${outputs.join("\n")}`);
}

describe("control plane SIGKILLed mid-provision on Fly, then restarted on the same database", () => {
  it("the next process reclaims the operation after the lease: one machine, one volume, succeeded", async () => {
    let first: ControlPlaneProcess | undefined;
    let second: ControlPlaneProcess | undefined;
    try {
      first = await startControlPlaneProcess({ env });
      const created = await first.admin("POST", "/cp/orgs", { slug: "crash-fly", name: "Crash on Fly" });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const orgId: string = created.body.org.id;
      const credential: string = created.body.tenant_credential;

      // Fly receives the machine create and does not answer it.
      fly.inject({ operation: "Machines_create", kind: "slow", delayMs: HELD_MS });
      const workspaceId = `ws_01jcrash00${randomBytes(8).toString("hex")}`;
      const spec = {
        workspace_id: workspaceId,
        runtime: "hermes",
        tier: 2,
        env: { WORKSPACE_ID: workspaceId, WORKSPACE_BOOT_TOKEN: "crash-boot-secret" },
        secret_keys: ["WORKSPACE_BOOT_TOKEN"],
        metadata: {},
      };
      const accepted = await first.tenantClient(orgId, credential).call<{ operation: CpOperationView }>({
        op: "provision",
        method: "POST",
        path: "/cp/workspaces/provision",
        body: spec,
        idempotencyKey: `crash-${workspaceId}`,
      });
      expect(accepted.status).toBe(202);
      const operationId = accepted.body.operation.id;

      // The kill lands mid-operation: the volume exists (and its step is recorded; steps are written as they
      // finish, so one written a moment before a kill can be lost) and the machine create is in flight.
      await waitFor(
        "the volume to exist, its step to be recorded and the machine create to be in flight",
        async () =>
          fly.volumes(FLY_APP).length === 1 &&
          (fly.requestCounts().Machines_create ?? 0) >= 1 &&
          (await operationRow(operationId)).steps.some((step) => step.name === "volume_created")
            ? true
            : undefined,
        60_000,
        10,
      );
      const exit = await first.kill("SIGKILL");
      expect(exit.signal).toBe("SIGKILL");

      const atKill = await operationRow(operationId);
      expect(atKill.status).toBe("running");
      expect(atKill.attempts).toBe(1);
      expect(atKill.steps.map((step) => step.name)).not.toContain("machine_created");
      expect(fly.machines(FLY_APP)).toHaveLength(0);
      expect(fly.volumes(FLY_APP)).toHaveLength(1);
      expect(fly.pendingFaults()).toBe(0);

      second = await startControlPlaneProcess({ env });
      const client = second.tenantClient(orgId, credential);
      const operation = await waitFor(
        `operation ${operationId} to succeed`,
        async () => {
          const shown = await client.call<unknown>({
            op: "operation",
            method: "GET",
            path: `/cp/operations/${operationId}`,
          });
          const view = CpOperationView.parse(shown.body);
          if (view.status === "failed") throw new Error(`operation failed: ${JSON.stringify(view.error)}`);
          return view.status === "succeeded" ? view : undefined;
        },
        90_000,
      ).catch((error: unknown) => {
        throw new Error(`${(error as Error).message}\nFly requests: ${JSON.stringify(fly.requestCounts())}`);
      });
      expect(operation.id).toBe(operationId);
      expect(operation.workspace_id).toBe(workspaceId);
      expect(operation.error).toBeNull();
      // The tenant's view carries no attempt count; the row does.
      expect((await operationRow(operationId)).attempts).toBeGreaterThanOrEqual(2);

      // Steps of both attempts, in order: the volume was created by the killed process and found by the next one.
      const names = operation.steps.map((step) => step.name);
      const shown = JSON.stringify(operation.steps);
      expect(
        names.filter((name) => name === "volume_created"),
        shown,
      ).toHaveLength(1);
      expect(
        names.filter((name) => name === "machine_created"),
        shown,
      ).toHaveLength(1);
      expect(names.at(-1), shown).toBe("machine_started");

      // Exactly one machine and one volume for the workspace, the machine mounting that volume.
      const machines = fly.machines(FLY_APP);
      const volumes = fly.volumes(FLY_APP);
      expect(machines).toHaveLength(1);
      expect(volumes).toHaveLength(1);
      expect(machines[0]?.state).toBe("started");
      expect(JSON.stringify(machines[0]?.config.metadata)).toContain(workspaceId);
      const mounts = machines[0]?.config.mounts as { volume: string }[] | undefined;
      expect(mounts?.map((mount) => mount.volume)).toEqual([volumes[0]?.id]);
      expect(fly.requestCounts().Volumes_create).toBe(1);
      expect(fly.violations).toEqual([]);

      const status = await client.call<{ state: string }>({
        op: "status",
        method: "GET",
        path: `/cp/workspaces/${workspaceId}/status`,
      });
      expect(status.body.state).toBe("running");

      // The resumed process tears it down completely too.
      const destroy = await client.call<{ operation: CpOperationView }>({
        op: "destroy",
        method: "DELETE",
        path: `/cp/workspaces/${workspaceId}`,
        idempotencyKey: `destroy-${workspaceId}`,
      });
      expect(destroy.status).toBe(202);
      await waitFor(`workspace ${workspaceId} to be destroyed`, async () => {
        const shown = await client.call<unknown>({
          op: "operation",
          method: "GET",
          path: `/cp/operations/${destroy.body.operation.id}`,
        });
        const view = CpOperationView.parse(shown.body);
        if (view.status === "failed") throw new Error(`destroy failed: ${JSON.stringify(view.error)}`);
        return view.status === "succeeded" ? view : undefined;
      });
      expect(fly.machines(FLY_APP)).toHaveLength(0);
      expect(fly.volumes(FLY_APP)).toHaveLength(0);

      expect((await second.kill("SIGTERM")).code).toBe(0);
      for (const cp of [first, second]) {
        expect(cp.output()).not.toContain(FLY_TOKEN);
        expect(cp.output()).not.toContain(credential);
        expect(cp.output()).not.toContain("crash-boot-secret");
      }
    } catch (error) {
      throw withOutput(error, [
        ["killed control plane", first],
        ["resumed control plane", second],
      ]);
    }
  }, 180_000);
});

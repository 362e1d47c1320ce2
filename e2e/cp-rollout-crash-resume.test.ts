/**
 * The control plane SIGKILLed in the middle of a fleet rollout, then started again on the same database: the new
 * process takes the rollout over once its lease expires, skips the tenant that had finished, gets back the redeploy
 * the killed process had asked for (the same Idempotency-Key) instead of asking for a second, and finishes. Every
 * tenant's workspace is redeployed exactly once. The control plane runs as real processes; the tenants are tenant
 * platforms in this process on the real Docker engine, reached over loopback HTTP with their own admin tokens.
 */
import { randomBytes } from "node:crypto";
import Dockerode from "dockerode";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CP_MIGRATIONS } from "../apps/control-plane/src/db/migrations.ts";
import { type ControlPlaneProcess, startControlPlaneProcess } from "../test-support/control-plane.ts";
import { createDockerTestPlatform, removeDeployment } from "../test-support/docker-platform.ts";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import type { TestPlatform } from "../test-support/platform.ts";
import { killAllPlatformProcesses, uniqueDeployment } from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const docker = new Dockerode();
const deployment = `e2e-${randomBytes(4).toString("hex")}`;
// In slug order: the order a fleet rollout takes them.
const SLUGS = ["crash-a", "crash-b", "crash-c"];
let cpDb: TestDatabase;
let sql: postgres.Sql;
let env: Record<string, string>;
const tenants = new Map<string, { platform: TestPlatform; token: string; workspaceId: string }>();

beforeAll(async () => {
  cpDb = await createTestDatabase({ migrations: CP_MIGRATIONS });
  sql = postgres(cpDb.url, { max: 1, onnotice: () => {} });
  env = {
    DATABASE_URL: cpDb.url,
    MOLECULE_DEPLOYMENT: uniqueDeployment(),
    CP_ADMIN_API_TOKEN: `mca_${randomBytes(16).toString("hex")}`,
    PROVISION_SHARED_SECRET: randomBytes(32).toString("hex"),
    CP_SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
    CP_TENANT_BACKEND: "external",
    TENANT_URL_TEMPLATE: "http://127.0.0.1:9/{slug}",
    OPERATION_LEASE_SECONDS: "2",
  };
}, 120_000);

afterAll(async () => {
  await killAllPlatformProcesses();
  for (const tenant of tenants.values()) await tenant.platform.close();
  await sql?.end();
  await cpDb?.drop();
  await removeDeployment(docker, deployment);
});

interface RolloutRow {
  status: string;
  attempts: number;
  steps: { name: string; detail?: string }[];
  tenants: Record<string, { status: string; workspaces: { id: string; outcome: string }[] }>;
}

async function rolloutRow(id: string): Promise<RolloutRow> {
  const [row] = await sql<
    RolloutRow[]
  >`SELECT status, attempts, steps, tenants FROM cp_rollouts WHERE id = ${id}`;
  if (!row) throw new Error(`rollout ${id} not found`);
  return row;
}

/** An org on the control plane, its tenant platform on Docker with one online workspace, the org ready at its URL. */
async function tenantFor(cp: ControlPlaneProcess, slug: string): Promise<void> {
  const created = await cp.admin("POST", "/cp/orgs", { slug, name: `Org ${slug}` });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const orgId: string = created.body.org.id;
  const token: string = created.body.tenant_admin_token;
  // The external tenant backend's provision only records the URL: wait for it before pointing the org at ours.
  await waitFor(`${slug}'s provision`, async () => {
    const [op] = await sql<{ status: string }[]>`
      SELECT status FROM cp_operations WHERE org_id = ${orgId} AND kind = 'provision_tenant'`;
    return op?.status === "succeeded" ? true : undefined;
  });
  const platform = await createDockerTestPlatform({
    docker,
    deployment,
    settings: { orgId, adminToken: token },
  });
  const url = await platform.listen();
  await sql`UPDATE cp_orgs SET status = 'ready', tenant_url = ${url} WHERE id = ${orgId}`;
  const workspace = await platform.call("POST", "/workspaces", {
    token,
    body: { name: slug, runtime: "echo" },
  });
  expect(workspace.status).toBe(202);
  const workspaceId: string = workspace.body.workspace.id;
  await waitFor(`${slug}'s workspace online`, async () =>
    (await platform.call("GET", `/workspaces/${workspaceId}`, { token })).body.status === "online"
      ? true
      : undefined,
  );
  tenants.set(slug, { platform, token, workspaceId });
}

async function redeploysOf(slug: string): Promise<string[]> {
  const tenant = tenants.get(slug);
  if (!tenant) throw new Error(`no tenant ${slug}`);
  const listed = await tenant.platform.call("GET", `/workspaces/${tenant.workspaceId}/operations`, {
    token: tenant.token,
  });
  return listed.body.operations
    .filter((operation: { kind: string }) => operation.kind === "redeploy")
    .map((operation: { id: string; status: string }) => `${operation.id}:${operation.status}`);
}

describe("control plane SIGKILLed mid fleet rollout, then restarted on the same database", () => {
  it("resumes after the lease, skips the finished tenant, redeploys every workspace exactly once", async () => {
    let first: ControlPlaneProcess | undefined;
    let second: ControlPlaneProcess | undefined;
    try {
      first = await startControlPlaneProcess({ env });
      for (const slug of SLUGS) await tenantFor(first, slug);

      const accepted = await first.admin("POST", "/cp/admin/tenants/workspaces/redeploy-fleet", {
        batch_size: 1,
      });
      expect(accepted.status, JSON.stringify(accepted.body)).toBe(202);
      const id: string = accepted.body.rollout.id;
      // The kill lands once the first tenant finished and the second one's redeploy is being asked for (its entry is
      // written before the request goes out, so the request may or may not have reached the tenant).
      const [one, two] = SLUGS as [string, string, string];
      await waitFor(
        "the first tenant finished and the second one's redeploy under way",
        async () => {
          const row = await rolloutRow(id);
          if (row.status === "succeeded" || row.status === "failed") throw new Error(JSON.stringify(row));
          return row.tenants[one]?.status === "succeeded" &&
            row.tenants[two]?.workspaces.some((workspace) => workspace.outcome === "redeploy")
            ? true
            : undefined;
        },
        120_000,
        20,
      );
      const exit = await first.kill("SIGKILL");
      expect(exit.signal).toBe("SIGKILL");
      const killed = await rolloutRow(id);
      expect(killed.status).toBe("running");
      expect(killed.tenants[one]?.status).toBe("succeeded");

      second = await startControlPlaneProcess({ env });
      const finished = await waitFor(
        `rollout ${id} to finish after the restart`,
        async () => {
          const row = await rolloutRow(id);
          return row.status === "succeeded" || row.status === "failed" ? row : undefined;
        },
        180_000,
      );
      expect(finished.status, JSON.stringify(finished)).toBe("succeeded");
      expect(finished.attempts).toBe(2);
      // The resumed attempt began at the second tenant: the first tenant's phase is not started again (the killed
      // attempt's own steps may be lost with it: they are written as they finish, and a kill can beat the write).
      const phases = finished.steps
        .filter((step) => step.name === "phase_started")
        .map((step) => step.detail);
      expect(phases.filter((phase) => phase === `batch 1: ${one}`).length).toBeLessThanOrEqual(1);
      expect(phases.slice(-2)).toEqual([`batch 2: ${two}`, `batch 3: ${SLUGS[2]}`]);
      const read = await second.admin("GET", `/cp/admin/rollouts/${id}`);
      expect(read.body.rollout.tenants.map((tenant: { status: string }) => tenant.status)).toEqual([
        "succeeded",
        "succeeded",
        "succeeded",
      ]);
      // Exactly one redeploy per workspace, each succeeded, each the one the rollout recorded.
      for (const slug of SLUGS) {
        const redeploys = await redeploysOf(slug);
        expect(redeploys, slug).toHaveLength(1);
        expect(redeploys[0], slug).toMatch(/:succeeded$/);
        const line = read.body.rollout.tenants.find((tenant: { slug: string }) => tenant.slug === slug);
        expect(redeploys[0]?.startsWith(`${line.workspaces[0].operation_id}:`), slug).toBe(true);
      }
      expect((await second.kill("SIGTERM")).code).toBe(0);
    } catch (error) {
      const outputs = [
        ["killed control plane", first],
        ["restarted control plane", second],
      ].map(
        ([name, cp]) =>
          `--- ${name} ---\n${(cp as ControlPlaneProcess | undefined)?.output() ?? "(not started)"}`,
      );
      throw new Error(`${(error as Error).message}\n${outputs.join("\n")}`);
    }
  }, 420_000);
});

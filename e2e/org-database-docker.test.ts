/**
 * TENANT_DATABASES=per-org end to end: a real control plane process on PostgreSQL, its docker tenant backend on the
 * host network and the real tenant platform image. The org's tenant gets its own database on the control plane's
 * server (no CP_TENANT_DATABASE_URL: the control plane's DATABASE_URL is the admin URL), keeps its workspaces there,
 * and the database and its role go with the org.
 */
import { randomBytes } from "node:crypto";
import Dockerode from "dockerode";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CP_MIGRATIONS } from "../apps/control-plane/src/db/migrations.ts";
import { type ControlPlaneProcess, startControlPlaneProcess } from "../test-support/control-plane.ts";
import { ADMIN_DATABASE_URL, createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import { callJson, uniqueDeployment } from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const SLOW_MS = 240_000;
const docker = new Dockerode();
const deployment = uniqueDeployment();
const slug = `pgorg-${randomBytes(3).toString("hex")}`;

let database: TestDatabase;
let cp: ControlPlaneProcess;

async function adminQuery(text: string, ...values: string[]): Promise<unknown[]> {
  const sql = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    return [...(await sql.unsafe(text, values))];
  } finally {
    await sql.end();
  }
}

beforeAll(async () => {
  database = await createTestDatabase({ migrations: CP_MIGRATIONS });
  cp = await startControlPlaneProcess({
    env: {
      DATABASE_URL: database.url,
      MOLECULE_DEPLOYMENT: deployment,
      CP_WORKSPACE_BACKEND: "docker",
      WORKSPACE_NETWORK: "host",
      CP_TENANT_BACKEND: "docker",
      TENANT_NETWORK: "host",
      TENANT_DATABASES: "per-org",
      TENANT_READY_DEADLINE_SECONDS: String(SLOW_MS / 1000),
    },
  });
}, 180_000);

afterAll(async () => {
  await cp?.kill("SIGTERM");
  const filters = { label: [`molecule.deployment=${deployment}`] };
  for (const container of await docker.listContainers({ all: true, filters })) {
    await docker.getContainer(container.Id).remove({ force: true });
  }
  for (const volume of (await docker.listVolumes({ filters })).Volumes ?? []) {
    await docker.getVolume(volume.Name).remove({ force: true });
  }
  // A failed run's org database and role, made for this slug (the org delete drops them when it runs).
  for (const { datname } of (await adminQuery(
    "SELECT datname FROM pg_database WHERE datname LIKE $1",
    `tenant_${slug.replace("-", "_")}_%`,
  )) as { datname: string }[]) {
    await adminQuery(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`);
    await adminQuery(`DROP ROLE IF EXISTS "${datname}"`);
  }
  await database?.drop();
}, 120_000);

async function orgStatus(want: string): Promise<{ org: { tenant_url: string; status: string } }> {
  return waitFor(
    `org ${slug} to be ${want}`,
    async () => {
      const { body } = await cp.admin("GET", `/cp/orgs/${slug}`);
      if (body?.org?.status === "failed")
        throw new Error(`org failed: ${JSON.stringify(body)}\n${cp.output()}`);
      return body?.org?.status === want ? body : undefined;
    },
    SLOW_MS,
    500,
  );
}

describe("a database per org on the control plane's PostgreSQL server", () => {
  it(
    "is made for the org's tenant, holds its workspaces, and is dropped with the org",
    { timeout: 600_000 },
    async () => {
      const created = await cp.admin("POST", "/cp/orgs", { slug, name: "Per-org database" });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const tenantToken: string = created.body.tenant_admin_token;
      const ready = await orgStatus("ready");

      const tenant = await docker.getContainer(`tenant-${slug}`).inspect();
      const databaseUrl =
        tenant.Config.Env.find((entry) => entry.startsWith("DATABASE_URL="))?.slice(13) ?? "";
      const name = new URL(databaseUrl).username;
      expect(name).toMatch(new RegExp(`^tenant_${slug.replace("-", "_")}_[0-9a-f]{8}$`));
      expect(new URL(databaseUrl).pathname).toBe(`/${name}`);
      const password = new URL(databaseUrl).password;
      expect(password).toMatch(/^[0-9a-f]{64}$/);

      // The tenant keeps its workspaces in that database.
      const workspace = await callJson(ready.org.tenant_url, tenantToken, "POST", "/workspaces", {
        name: "remote",
        external: true,
      });
      expect(workspace.status, JSON.stringify(workspace.body)).toBe(202);
      const tenantDb = postgres(databaseUrl, { max: 1, onnotice: () => {} });
      try {
        const rows = await tenantDb`SELECT name FROM workspaces WHERE id = ${workspace.body.id}`;
        expect(rows).toEqual([{ name: "remote" }]);
      } finally {
        await tenantDb.end();
      }

      // The credential is in the tenant's environment only: not in the control plane's answers, log or labels.
      expect(JSON.stringify((await cp.admin("GET", `/cp/orgs/${slug}`)).body)).not.toContain(password);
      expect(JSON.stringify(tenant.Config.Labels)).not.toContain(password);
      expect(cp.output()).not.toContain(password);

      const deleted = await cp.admin("DELETE", `/cp/orgs/${slug}`, { confirm: slug });
      expect(deleted.status, JSON.stringify(deleted.body)).toBe(202);
      await orgStatus("deleted");
      expect(await adminQuery("SELECT 1 FROM pg_database WHERE datname = $1", name)).toEqual([]);
      expect(await adminQuery("SELECT 1 FROM pg_roles WHERE rolname = $1", name)).toEqual([]);
      expect(cp.output()).not.toContain(password);
    },
  );
});

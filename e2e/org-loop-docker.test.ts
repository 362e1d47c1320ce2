/**
 * The whole SaaS loop on one machine, every part real: the control plane process (PostgreSQL, docker workspace
 * backend, docker tenant backend, both on the host network), the tenant platform image it starts for an org, and the
 * echo workspace image the control plane starts for that tenant.
 *
 *   POST /cp/orgs → tenant container starts → boot events → org ready
 *   tenant API (its URL, tenant_admin_token): create a workspace → it runs on the control plane's docker backend,
 *   its agent registers with the tenant → online
 *   POST /cp/admin/tenants/:slug/redeploy onto another tag of the image → the tenant container is recreated on the
 *   same volume and reports ready with that image; its workspace is still there and its container untouched
 *   POST …/stop, …/start → the tenant container stops (the org shows stopped) and comes back ready
 *   DELETE /cp/orgs/:slug → workspace container, tenant container and volume, and the org's rows are gone
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import Dockerode from "dockerode";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CP_MIGRATIONS } from "../apps/control-plane/src/db/migrations.ts";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import { freePort, REPO_ROOT, uniqueDeployment } from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const TENANT_IMAGE = "molecule/tenant-platform:latest";
const CP_MAIN = join(REPO_ROOT, "apps/control-plane/src/main.ts");
const ADMIN_TOKEN = `cp-admin-${randomBytes(16).toString("hex")}`;
/**
 * The tenant compiles its embedded database's WebAssembly at start-up: seconds on an idle machine, far longer on a
 * loaded one. Waits are generous; only a loop that never converges fails.
 */
const SLOW_MS = 240_000;

const docker = new Dockerode();
const deployment = uniqueDeployment();
const slug = `loop-${randomBytes(3).toString("hex")}`;
/** The same build under a second reference: what a redeploy moves the tenant to. */
const NEXT_TAG = `redeploy-${slug}`;
const NEXT_IMAGE = `molecule/tenant-platform:${NEXT_TAG}`;

let database: TestDatabase;
let cp: { url: string; child: ChildProcess; output: () => string };

interface Reply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: answers are asserted on field by field
  body: any;
}

async function call(
  url: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<Reply> {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

const cpCall = (method: string, path: string, body?: unknown) =>
  call(cp.url, ADMIN_TOKEN, method, path, body);

async function startControlPlane(): Promise<typeof cp> {
  const port = await freePort();
  const env: Record<string, string> = {
    PORT: String(port),
    HOST: "127.0.0.1",
    DATABASE_URL: database.url,
    CP_ADMIN_API_TOKEN: ADMIN_TOKEN,
    PROVISION_SHARED_SECRET: randomBytes(32).toString("hex"),
    CP_SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
    MOLECULE_DEPLOYMENT: deployment,
    CP_WORKSPACE_BACKEND: "docker",
    WORKSPACE_NETWORK: "host",
    CP_TENANT_BACKEND: "docker",
    TENANT_NETWORK: "host",
    TENANT_IMAGE,
    TENANT_READY_DEADLINE_SECONDS: String(SLOW_MS / 1000),
    LOG_LEVEL: "info",
  };
  for (const key of ["PATH", "HOME", "TMPDIR", "DOCKER_HOST"]) {
    const value = process.env[key];
    if (value !== undefined) env[key] = value;
  }
  const child = spawn(process.execPath, ["--import", "tsx", CP_MAIN], {
    cwd: REPO_ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const chunks: string[] = [];
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => chunks.push(chunk));
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => chunks.push(chunk));
  const output = () => chunks.join("");
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    "the control plane to answer /health",
    async () => {
      if (child.exitCode !== null) throw new Error(`control plane exited (${child.exitCode}):\n${output()}`);
      const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
      return response.ok ? true : undefined;
    },
    120_000,
  );
  return { url, child, output };
}

async function stopControlPlane(): Promise<void> {
  if (!cp || cp.child.exitCode !== null || cp.child.signalCode !== null) return;
  const exited = new Promise((resolve) => cp.child.once("exit", resolve));
  cp.child.kill("SIGTERM");
  const killed = setTimeout(() => cp.child.kill("SIGKILL"), 25_000);
  await exited;
  clearTimeout(killed);
}

async function exists(kind: "container" | "volume", name: string): Promise<boolean> {
  try {
    if (kind === "container") await docker.getContainer(name).inspect();
    else await docker.getVolume(name).inspect();
    return true;
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode === 404) return false;
    throw error;
  }
}

/** The last lines of a container's log, for failure messages. */
async function logsOf(name: string): Promise<string> {
  try {
    const logs = await docker.getContainer(name).logs({ stdout: true, stderr: true, tail: 40 });
    // biome-ignore lint/suspicious/noControlCharactersInRegex: drops the stream framing bytes of the log
    return logs.toString("utf8").replace(/[\u0000-\u0008\u000e-\u001f]/g, "");
  } catch {
    return `(no container ${name})`;
  }
}

beforeAll(async () => {
  await docker.getImage(TENANT_IMAGE).inspect(); // built by the global setup, like the workspace image
  await docker.getImage(TENANT_IMAGE).tag({ repo: "molecule/tenant-platform", tag: NEXT_TAG });
  database = await createTestDatabase({ migrations: CP_MIGRATIONS });
  cp = await startControlPlane();
}, 180_000);

afterAll(async () => {
  await stopControlPlane();
  // Whatever a failed run left behind: everything the control plane made carries its deployment label.
  const filters = { label: [`molecule.deployment=${deployment}`] };
  for (const container of await docker.listContainers({ all: true, filters })) {
    await docker.getContainer(container.Id).remove({ force: true });
  }
  for (const volume of (await docker.listVolumes({ filters })).Volumes ?? []) {
    await docker.getVolume(volume.Name).remove({ force: true });
  }
  await docker
    .getImage(NEXT_IMAGE)
    .remove()
    .catch(() => undefined);
  await database?.drop();
}, 120_000);

/** Waits for the org's latest operation, of `kind`, to succeed; its failure fails the test with the tenant's log. */
async function operationSucceeded(kind: string) {
  let lastSeen: unknown;
  return waitFor(
    `${kind} of ${slug} to succeed`,
    async () => {
      const { body } = await cpCall("GET", `/cp/orgs/${slug}`);
      lastSeen = body;
      if (body.operation?.kind !== kind) return undefined;
      if (body.operation.status === "failed") {
        throw new Error(
          `${kind} failed: ${JSON.stringify(body.operation)}\n${await logsOf(`tenant-${slug}`)}`,
        );
      }
      return body.operation.status === "succeeded" ? body : undefined;
    },
    SLOW_MS,
    500,
  ).catch(async (error: Error) => {
    throw new Error(
      `${error.message}\nlast seen: ${JSON.stringify(lastSeen)}\ntenant log:\n${await logsOf(`tenant-${slug}`)}`,
    );
  });
}

describe("org loop on docker: control plane → tenant container → workspace container", () => {
  it(
    "creates an org whose tenant boots and runs a workspace through the control plane, then deletes it all",
    {
      timeout: 900_000,
    },
    async () => {
      // 1. The org; its tenant starts as container tenant-<slug>.
      const created = await cpCall("POST", "/cp/orgs", { slug, name: "Org loop" });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const orgId: string = created.body.org.id;
      const tenantAdminToken: string = created.body.tenant_admin_token;
      expect(created.body.org).toMatchObject({ slug, status: "provisioning" });
      expect(tenantAdminToken).toMatch(/^mat_/);

      let lastSeen: unknown;
      const ready = await waitFor(
        `org ${slug} to be ready`,
        async () => {
          const { body } = await cpCall("GET", `/cp/orgs/${slug}`);
          lastSeen = body;
          if (body.org.status === "failed") {
            throw new Error(`org failed: ${JSON.stringify(body)}\n${await logsOf(`tenant-${slug}`)}`);
          }
          return body.org.status === "ready" ? body : undefined;
        },
        SLOW_MS,
        500,
      ).catch(async (error: Error) => {
        throw new Error(
          `${error.message}\nlast seen: ${JSON.stringify(lastSeen)}\ntenant log:\n${await logsOf(`tenant-${slug}`)}\ncontrol plane output:\n${cp.output().slice(-4000)}`,
        );
      });
      const stages = (ready.provision_status.events as { stage: string }[]).map((event) => event.stage);
      expect(stages).toEqual(expect.arrayContaining(["migrated", "listening", "ready"]));
      expect(stages).not.toContain("failed");
      expect(ready.operation).toMatchObject({ kind: "provision_tenant", status: "succeeded" });

      const tenantUrl: string = ready.org.tenant_url;
      expect(tenantUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const tenant = await docker.getContainer(`tenant-${slug}`).inspect();
      expect(tenant.State.Running).toBe(true);
      expect(tenant.Config.Labels).toMatchObject({
        "molecule.org_id": orgId,
        "molecule.deployment": deployment,
        "molecule.kind": "tenant",
      });
      expect(tenant.Config.Env).toEqual(
        expect.arrayContaining([`MOLECULE_ORG_ID=${orgId}`, "MOLECULE_ENV=production"]),
      );
      expect(await exists("volume", `tenant-${slug}-data`)).toBe(true);
      expect((await fetch(`${tenantUrl}/health`)).status).toBe(200);

      // 2. A workspace, through the tenant's own API; the control plane runs it on its docker backend.
      const tenantCall = (method: string, path: string, body?: unknown) =>
        call(tenantUrl, tenantAdminToken, method, path, body);
      const workspace = await tenantCall("POST", "/workspaces", { name: "loop", runtime: "echo" });
      expect(workspace.status, JSON.stringify(workspace.body)).toBe(202);
      const workspaceId: string = workspace.body.workspace.id;
      const workspaceContainer = workspaceId.replace("_", "-");

      let lastWorkspace: unknown;
      const online = await waitFor(
        `workspace ${workspaceId} to be online`,
        async () => {
          const { body } = await tenantCall("GET", `/workspaces/${workspaceId}`);
          lastWorkspace = body;
          if (body.status === "failed") throw new Error(`workspace failed: ${JSON.stringify(body)}`);
          return body.status === "online" ? body : undefined;
        },
        SLOW_MS,
        500,
      ).catch(async (error: Error) => {
        throw new Error(
          `${error.message}\nlast seen: ${JSON.stringify(lastWorkspace)}\nworkspace log:\n${await logsOf(workspaceContainer)}\ntenant log:\n${await logsOf(`tenant-${slug}`)}`,
        );
      });
      expect(online.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+/);
      const wsInfo = await docker.getContainer(workspaceContainer).inspect();
      expect(wsInfo.State.Running).toBe(true);
      expect(wsInfo.Config.Labels).toMatchObject({
        "molecule.workspace_id": workspaceId,
        "molecule.org_id": orgId,
        "molecule.deployment": deployment,
      });
      expect(wsInfo.HostConfig.NetworkMode).toBe("host");

      // 3. Redeploy the tenant onto another reference of the image: a new container on the same volume and port,
      //    ready with that image; the workspace it runs is still in its database and its container untouched.
      const before = await docker.getContainer(`tenant-${slug}`).inspect();
      expect(ready.org.tenant_image).toBe(TENANT_IMAGE);
      const redeploy = await cpCall("POST", `/cp/admin/tenants/${slug}/redeploy`, { image: NEXT_IMAGE });
      expect(redeploy.status, JSON.stringify(redeploy.body)).toBe(202);
      const redeployed = await operationSucceeded("redeploy_tenant");
      expect(redeployed.org).toMatchObject({
        status: "ready",
        tenant_image: NEXT_IMAGE,
        tenant_url: tenantUrl,
      });
      const after = await docker.getContainer(`tenant-${slug}`).inspect();
      expect(after.Id).not.toBe(before.Id);
      expect(after.Config.Image).toBe(NEXT_IMAGE);
      expect(after.Config.Env).toContain(`MOLECULE_IMAGE=${NEXT_IMAGE}`);
      expect(after.Mounts.map((mount) => mount.Name)).toEqual([`tenant-${slug}-data`]);
      const kept = await tenantCall("GET", `/workspaces/${workspaceId}`);
      expect(kept.status).toBe(200);
      expect(kept.body.id).toBe(workspaceId);
      expect((await docker.getContainer(workspaceContainer).inspect()).Id).toBe(wsInfo.Id);

      // 4. Stop and start: the same container, stopped (the org shows it) and back once the tenant is ready.
      expect((await cpCall("POST", `/cp/admin/tenants/${slug}/stop`)).status).toBe(202);
      const stopped = await operationSucceeded("stop_tenant");
      expect(stopped.org.status).toBe("stopped");
      expect((await docker.getContainer(`tenant-${slug}`).inspect()).State.Running).toBe(false);
      expect((await docker.getContainer(workspaceContainer).inspect()).State.Running).toBe(true);
      expect((await cpCall("POST", `/cp/admin/tenants/${slug}/start`)).status).toBe(202);
      const started = await operationSucceeded("start_tenant");
      expect(started.org).toMatchObject({ status: "ready", tenant_image: NEXT_IMAGE });
      const restarted = await docker.getContainer(`tenant-${slug}`).inspect();
      expect(restarted.Id).toBe(after.Id);
      expect(restarted.State.Running).toBe(true);
      expect((await tenantCall("GET", `/workspaces/${workspaceId}`)).body.id).toBe(workspaceId);

      // 5. Delete the org: the cascade removes the workspace, the tenant and the org's rows.
      const deleted = await cpCall("DELETE", `/cp/orgs/${slug}`, { confirm: slug });
      expect(deleted.status, JSON.stringify(deleted.body)).toBe(202);
      expect(deleted.body.operation).toMatchObject({ kind: "destroy_org" });
      const tombstone = await waitFor(
        `org ${slug} to be deleted`,
        async () => {
          const { body } = await cpCall("GET", `/cp/orgs/${slug}`);
          lastSeen = body;
          return body.org.status === "deleted" ? body : undefined;
        },
        SLOW_MS,
        500,
      ).catch((error: Error) => {
        throw new Error(
          `${error.message}\nlast seen: ${JSON.stringify(lastSeen)}\n${cp.output().slice(-4000)}`,
        );
      });
      expect(tombstone).toMatchObject({ org: { id: orgId, status: "deleted", tenant_url: null } });

      expect(await exists("container", workspaceContainer)).toBe(false);
      expect(await exists("volume", workspaceContainer)).toBe(false);
      expect(await exists("container", `tenant-${slug}`)).toBe(false);
      expect(await exists("volume", `tenant-${slug}-data`)).toBe(false);
      const left = await docker.listContainers({
        all: true,
        filters: { label: [`molecule.org_id=${orgId}`] },
      });
      expect(left).toEqual([]);

      const sql = postgres(database.url, { max: 1, onnotice: () => {} });
      try {
        for (const table of [
          "cp_workspaces",
          "cp_operations",
          "cp_boot_events",
          "cp_tenant_credentials",
          "cp_request_nonces",
        ]) {
          const [row] = await sql.unsafe(`SELECT count(*)::int AS n FROM ${table} WHERE org_id = $1`, [
            orgId,
          ]);
          expect(row?.n, table).toBe(0);
        }
        const [org] = await sql`SELECT status, tenant_handle FROM cp_orgs WHERE id = ${orgId}`;
        expect(org).toEqual({ status: "deleted", tenant_handle: null });
      } finally {
        await sql.end();
      }

      // The slug is free again.
      expect((await cpCall("GET", "/cp/orgs")).body.orgs.map((o: { slug: string }) => o.slug)).not.toContain(
        slug,
      );
    },
  );
});

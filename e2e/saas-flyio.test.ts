/**
 * The SaaS shape end to end, every part its own process over real HTTP: the control plane (main.ts on PostgreSQL,
 * the Fly emulator as its workspace backend, tenants started by the operator — CP_TENANT_BACKEND=external) and the
 * org's tenant platform in SaaS mode started with what `POST /cp/orgs` answered. Through the tenant's API a workspace
 * is created (a Fly machine carrying the tenant's env), its agent registers from that env, it stops, starts and is
 * deleted; then deleting the org with a workspace still present leaves nothing in the emulator and no row of the org
 * in the control plane's tables.
 */
import { readFileSync } from "node:fs";
import { deriveTenantSigningKey } from "@molecule/identity";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type SaasFly, startSaasFly } from "../test-support/saas-fly.ts";
import { waitFor } from "../test-support/wait.ts";

const SLUG = "acme-fly";

let saas: SaasFly;
let fly: SaasFly["fly"];
let cp: SaasFly["cp"];
let tenant: SaasFly["tenant"];
let org: SaasFly["org"];
let flyApp: string;
let flyToken: string;
let sharedSecret: string;

beforeAll(async () => {
  saas = await startSaasFly({ flyApp: "molecule-ws-saas", slug: SLUG, name: "Acme on Fly" });
  ({ fly, cp, tenant, org, flyApp, flyToken, sharedSecret } = saas);
}, 180_000);

afterAll(() => saas?.close());

const liveMachines = () => fly.machines(flyApp).filter((machine) => machine.state !== "destroyed");

const statusBecomes = (id: string, status: string) =>
  waitFor(`workspace ${id} to be ${status}`, async () => {
    const { body } = await tenant.call("GET", `/workspaces/${id}`);
    return body.status === status ? body : undefined;
  });

/** The agent inside the machine, played by the test: it reads what the machine was started with. */
async function agentCall(env: Record<string, string>, path: string, token: string, body: unknown) {
  const response = await fetch(`${env.PLATFORM_URL}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  return {
    status: response.status,
    body: (await response.json().catch(() => null)) as Record<string, string>,
  };
}

function machineEnv(id: string): Record<string, string> {
  const machine = liveMachines().find(
    (m) => (m.config.env as Record<string, string> | undefined)?.WORKSPACE_ID === id,
  );
  expect(machine, `a live machine for ${id}`).toBeDefined();
  return (machine?.config.env ?? {}) as Record<string, string>;
}

function environOf(pid: number): Map<string, string> {
  const entries = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter(Boolean);
  return new Map(
    entries.map((entry) => [entry.slice(0, entry.indexOf("=")), entry.slice(entry.indexOf("=") + 1)]),
  );
}

describe("SaaS: control plane with the Fly backend, a tenant platform for one org", () => {
  it("the org is ready once its tenant booted, and the tenant holds no cloud credential", async () => {
    const shown = await waitFor("the org to be ready", async () => {
      const { body } = await cp.admin("GET", `/cp/orgs/${SLUG}`);
      return body.org.status === "ready" ? body : undefined;
    });
    expect(shown.provision_status.events.map((e: { stage: string }) => e.stage)).toEqual([
      "migrated",
      "listening",
      "ready",
    ]);
    expect(shown.org.tenant_url).toBe(tenant.url);
    expect(tenant.output()).toContain("backend: controlplane");

    // The process environments as the kernel holds them: the Fly token is in the control plane's only.
    // (A tenant given FLY_API_TOKEN refuses to start: e2e/tenant-saas-startup.test.ts.)
    expect(environOf(cp.pid).get("FLY_API_TOKEN")).toBe(flyToken);
    const tenantEnv = environOf(tenant.pid);
    expect(tenantEnv.get("CP_TENANT_TOKEN")).toBe(org.credential);
    expect([...tenantEnv.keys()].filter((key) => /^(FLY_|AWS_)/.test(key))).toEqual([]);
    expect([...tenantEnv.values()]).not.toContain(flyToken);
    expect([...tenantEnv.values()]).not.toContain(sharedSecret);
  });

  it("runs a workspace's whole lifecycle on Fly through the tenant and the control plane", async () => {
    const created = await tenant.call("POST", "/workspaces", {
      name: "on-fly",
      runtime: "echo",
      tier: 2,
      secrets: { TENANT_SIDE: "from-the-tenant" },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    const id: string = created.body.workspace.id;
    const waiting = await statusBecomes(id, "awaiting_agent");
    expect(waiting.backend).toBe("controlplane");

    // The machine was made by the control plane with the env the tenant minted.
    expect(liveMachines()).toHaveLength(1);
    expect(fly.volumes(flyApp)).toHaveLength(1);
    const machine = liveMachines()[0];
    expect(JSON.stringify(machine?.config.metadata)).toContain(org.id);
    const env = machineEnv(id);
    expect(env.WORKSPACE_ID).toBe(id);
    expect(env.PLATFORM_URL).toBe(tenant.url);
    expect(env.TENANT_SIDE).toBe("from-the-tenant");
    expect(env.WORKSPACE_BOOT_TOKEN).toBeTruthy();
    expect(
      Object.keys(env).filter((key) => /^(FLY_API_TOKEN|CP_TENANT_TOKEN|PROVISION_SHARED)/.test(key)),
    ).toEqual([]);

    // The machine's address on Fly's private network, assigned by the control plane's backend, reached the tenant
    // through the operation's answer: the tenant (strict agent URL policy) accepts exactly it, and no other private URL.
    expect(env.AGENT_PUBLIC_URL).toBe(`http://${machine?.id}.vm.${flyApp}.internal:8000`);
    const boot = env.WORKSPACE_BOOT_TOKEN ?? "";
    for (const url of ["http://127.0.0.1:8000", `http://ffffffffffffff.vm.${flyApp}.internal:8000`]) {
      const refused = await agentCall(env, "/registry/register", boot, { id, url });
      expect(refused.status, url).toBe(400);
    }
    const registered = await agentCall(env, "/registry/register", boot, { id, url: env.AGENT_PUBLIC_URL });
    expect(registered.status, JSON.stringify(registered.body)).toBe(200);
    expect((await tenant.call("GET", `/workspaces/${id}`)).body.url).toBe(env.AGENT_PUBLIC_URL);
    const authToken = registered.body.auth_token ?? "";
    expect((await agentCall(env, "/registry/heartbeat", authToken, { workspace_id: id })).status).toBe(200);
    await statusBecomes(id, "online");

    expect((await tenant.call("POST", `/workspaces/${id}/stop`)).status).toBe(202);
    await statusBecomes(id, "stopped");
    expect(fly.machines(flyApp).find((m) => m.id === machine?.id)?.state).toBe("stopped");
    const listed = await cp.tenantClient(org.id, org.credential).call<{ workspaces: unknown[] }>({
      op: "list",
      method: "GET",
      path: "/cp/workspaces",
    });
    expect(listed.body.workspaces).toEqual([{ workspace_id: id, state: "stopped" }]);

    expect((await tenant.call("POST", `/workspaces/${id}/start`)).status).toBe(202);
    await statusBecomes(id, "awaiting_agent");
    expect(fly.machines(flyApp).find((m) => m.id === machine?.id)?.state).toBe("started");
    // the same machine, started again with the same env; the agent's stored token keeps working
    expect(machineEnv(id)).toEqual(env);
    const beat = await agentCall(env, "/registry/heartbeat", authToken, { workspace_id: id });
    expect(beat.status, JSON.stringify(beat.body)).toBe(200);
    await statusBecomes(id, "online");

    expect((await tenant.call("DELETE", `/workspaces/${id}`)).status).toBe(202);
    await statusBecomes(id, "removed");
    expect(liveMachines()).toHaveLength(0);
    expect(fly.volumes(flyApp)).toHaveLength(0);
    expect(fly.violations).toEqual([]);
  });

  it("deleting the org with a workspace still present leaves nothing on Fly and no row of the org", async () => {
    const created = await tenant.call("POST", "/workspaces", {
      name: "left-behind",
      runtime: "echo",
      tier: 2,
    });
    expect(created.status).toBe(202);
    const id: string = created.body.workspace.id;
    await statusBecomes(id, "awaiting_agent");
    expect(liveMachines()).toHaveLength(1);
    expect(fly.volumes(flyApp)).toHaveLength(1);

    const refused = await cp.admin("DELETE", `/cp/orgs/${SLUG}`, { confirm: "not-the-slug" });
    expect(refused.status).toBe(400);
    expect(liveMachines()).toHaveLength(1);

    const accepted = await cp.admin("DELETE", `/cp/orgs/${SLUG}`, { confirm: SLUG });
    expect(accepted.status).toBe(202);
    expect(accepted.body.operation.kind).toBe("destroy_org");
    const tombstone = await waitFor("the org to be deleted", async () => {
      const { body } = await cp.admin("GET", `/cp/orgs/${SLUG}`);
      return body.org.status === "deleted" ? body : undefined;
    });
    expect(tombstone.provision_status).toBeNull();

    expect(liveMachines()).toHaveLength(0);
    expect(fly.volumes(flyApp)).toHaveLength(0);
    expect(fly.violations).toEqual([]);

    // Every control-plane table with an org_id column holds no row of the org; cp_orgs keeps only the tombstone, and
    // the resource audit keeps the org's rows for audit, every one released.
    const sql = postgres(saas.cpDb.url, { max: 1, onnotice: () => {} });
    try {
      const tables = await sql<{ table_name: string }[]>`
        SELECT table_name FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name LIKE 'cp\\_%' AND column_name = 'org_id'
          AND table_name <> 'cp_tenant_resources'
        ORDER BY table_name`;
      const audit = await sql<{ state: string; n: number }[]>`
        SELECT state, count(*)::int AS n FROM cp_tenant_resources WHERE org_id = ${org.id} GROUP BY state`;
      expect(audit.map((row) => row.state)).toEqual(["released"]);
      expect(tables.map((t) => t.table_name)).toEqual(
        expect.arrayContaining(["cp_boot_events", "cp_operations", "cp_tenant_credentials", "cp_workspaces"]),
      );
      const counts: Record<string, number> = {};
      for (const { table_name } of tables) {
        const [row] = await sql<{ n: number }[]>`
          SELECT count(*)::int AS n FROM ${sql(table_name)} WHERE org_id = ${org.id}`;
        counts[table_name] = row?.n ?? -1;
      }
      expect(
        Object.values(counts).every((n) => n === 0),
        JSON.stringify(counts),
      ).toBe(true);
      const [orgRow] = await sql`SELECT * FROM cp_orgs WHERE id = ${org.id}`;
      expect(orgRow).toMatchObject({
        status: "deleted",
        slug: SLUG,
        tenant_url: null,
        tenant_handle: null,
        tenant_env_sealed: null,
      });
    } finally {
      await sql.end();
    }

    // The tenant's credential stopped working with the delete: its next control-plane call is refused.
    const stop = await tenant.call("POST", `/workspaces/${id}/stop`);
    expect(stop.status).toBe(202);
    const failed = await statusBecomes(id, "failed");
    expect(failed.statusReason).toMatch(/HTTP 401: unauthorized: unknown tenant credential/);

    // No secret reached either process's output.
    const secrets = [
      flyToken,
      sharedSecret,
      org.credential,
      org.adminToken,
      deriveTenantSigningKey(sharedSecret, org.id),
    ];
    for (const secret of secrets) {
      expect(cp.output()).not.toContain(secret);
      expect(tenant.output()).not.toContain(secret);
    }
  });
});

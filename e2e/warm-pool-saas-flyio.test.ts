/**
 * Warm pools on a SaaS tenant, every part its own process over real HTTP: the control plane (main.ts on PostgreSQL,
 * the Fly emulator as its workspace backend) and the org's tenant platform in SaaS mode. The tenant's `PUT /pools`
 * has the control plane make created-and-suspended machines labelled with the pool; a create claims one, which the
 * control plane resumes (the same machine); its agent takes the claim from the tenant and comes online with its own
 * secrets. The operator sees the org's members on the control plane; draining destroys them there; deleting the org
 * leaves no machine.
 */
import { LABELS } from "@molecule/provisioner-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type SaasFly, startSaasFly } from "../test-support/saas-fly.ts";
import { waitFor } from "../test-support/wait.ts";

const SLUG = "acme-pool";

let saas: SaasFly;
let fly: SaasFly["fly"];
let cp: SaasFly["cp"];
let tenant: SaasFly["tenant"];
let org: SaasFly["org"];
let flyApp: string;
let flyToken: string;
let sharedSecret: string;

beforeAll(async () => {
  saas = await startSaasFly({ flyApp: "molecule-ws-saas-pool", slug: SLUG, name: "Acme with a pool" });
  ({ fly, cp, tenant, org, flyApp, flyToken, sharedSecret } = saas);
}, 180_000);

afterAll(() => saas?.close());

type Machine = ReturnType<SaasFly["fly"]["machines"]>[number];
const liveMachines = () => fly.machines(flyApp).filter((machine) => machine.state !== "destroyed");
const envOf = (machine: Machine | undefined) => (machine?.config.env ?? {}) as Record<string, string>;
const poolLabelOf = (machine: Machine) =>
  ((machine.config.metadata ?? {}) as Record<string, string>)[LABELS.pool];
const machineOf = (id: string) => liveMachines().find((machine) => envOf(machine).WORKSPACE_ID === id);

/** The agent inside a machine, played by the test: it calls the tenant it was pointed at, as the machine's env says. */
async function agentCall(env: Record<string, string>, path: string, token: string, body: unknown) {
  const response = await fetch(`${env.PLATFORM_URL}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  // biome-ignore lint/suspicious/noExplicitAny: answers are asserted on field by field
  return { status: response.status, body: (await response.json().catch(() => null)) as any };
}

async function tenantPool() {
  const { body } = await tenant.call("GET", "/pools");
  return body.pools.find(
    (pool: { runtime: string; tier: number }) => pool.runtime === "echo" && pool.tier === 2,
  );
}

/** Plays every started member's agent (one claim wait, nothing yet) until `ready` members wait on suspended machines. */
function poolSuspended(ready: number, except: readonly string[] = []) {
  return waitFor(
    `${ready} pool members on suspended machines`,
    async () => {
      const members = liveMachines().filter(
        (machine) =>
          poolLabelOf(machine) === "echo-t2" && !except.includes(envOf(machine).WORKSPACE_ID ?? ""),
      );
      for (const machine of members) {
        const env = envOf(machine);
        if (machine.state !== "started" || !env.WORKSPACE_POOL_TOKEN) continue;
        await agentCall(env, "/registry/claim", env.WORKSPACE_POOL_TOKEN, {
          id: env.WORKSPACE_ID,
          wait_seconds: 0,
        });
      }
      const pool = await tenantPool();
      const suspended = members.filter((machine) => machine.state === "suspended");
      return pool?.ready === ready &&
        pool.starting === 0 &&
        suspended.length === ready &&
        members.length === ready
        ? suspended
        : undefined;
    },
    90_000,
    200,
  );
}

/**
 * Waits for the operator's view of the org's one pool to show these counts: the control plane writes a member's state
 * just after its backend call returns, so it may trail what the tenant and the emulator show by a moment.
 */
const cpPoolsBecome = (counts: { members: Record<string, number>; unclaimed: number; claimed: number }) =>
  waitFor(`the control plane's view of the pool to be ${JSON.stringify(counts)}`, async () => {
    const { body } = await cp.admin("GET", `/cp/orgs/${SLUG}/pools`);
    const [pool, ...others] = body.pools;
    return others.length === 0 &&
      pool?.unclaimed === counts.unclaimed &&
      pool.claimed === counts.claimed &&
      JSON.stringify(pool.members) === JSON.stringify(counts.members)
      ? pool
      : undefined;
  });

const statusBecomes = (id: string, status: string) =>
  waitFor(`workspace ${id} to be ${status}`, async () => {
    const { body } = await tenant.call("GET", `/workspaces/${id}`);
    return body.status === status ? body : undefined;
  });

describe("SaaS: warm pools through the control plane, on Fly", () => {
  it("keeps suspended member machines made by the control plane; a claim resumes one, its agent comes online with its own secrets; the pool refills; draining and deleting the org leave no machine", async () => {
    await waitFor("the org to be ready", async () => {
      const { body } = await cp.admin("GET", `/cp/orgs/${SLUG}`);
      return body.org.status === "ready" ? true : undefined;
    });
    const put = await tenant.call("PUT", "/pools", { runtime: "echo", tier: 2, size: 2 });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    const members = await poolSuspended(2);
    // The control plane chooses the image; the tenant does not claim to know it.
    expect((await tenantPool()).image).toBe("echo:backend-default");
    const memberIds = members.map((machine) => envOf(machine).WORKSPACE_ID as string).sort();
    for (const machine of members) {
      expect(JSON.stringify(machine.config.metadata)).toContain(org.id);
      expect(envOf(machine).WORKSPACE_BOOT_TOKEN).toBeUndefined();
      expect(envOf(machine).PLATFORM_URL).toBe(tenant.url);
    }
    const onCp = await cp.admin("GET", `/cp/orgs/${SLUG}/pools`);
    expect(onCp.body).toEqual({
      org_id: org.id,
      pools: [
        { pool: "echo-t2", runtime: "echo", tier: 2, members: { suspended: 2 }, unclaimed: 2, claimed: 0 },
      ],
    });
    const reconciled = await cp.admin("POST", "/cp/admin/reconcile");
    expect(reconciled.body.orphans).toBe(0);
    expect(reconciled.body.resources.byPool).toEqual({ [`${org.id}/echo-t2`]: 2 });

    const created = await tenant.call("POST", "/workspaces", {
      name: "from-the-pool",
      runtime: "echo",
      tier: 2,
      secrets: { ONLY_MINE: "claimant-secret" },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    expect(created.body.operation.kind).toBe("start");
    const id: string = created.body.workspace.id;
    expect(memberIds).toContain(id);
    const before = members.find((machine) => envOf(machine).WORKSPACE_ID === id);
    await statusBecomes(id, "awaiting_agent");
    // Resumed by the control plane: the machine the member was made as, not a new one.
    expect(machineOf(id)).toMatchObject({ id: before?.id, state: "started" });

    const env = envOf(machineOf(id));
    const claim = await agentCall(env, "/registry/claim", env.WORKSPACE_POOL_TOKEN ?? "", {
      id,
      wait_seconds: 5,
    });
    expect(claim.status, JSON.stringify(claim.body)).toBe(200);
    expect(claim.body).toMatchObject({ claimed: true, workspace_id: id, name: "from-the-pool" });
    const registered = await agentCall(env, "/registry/register", claim.body.boot_token, {
      id,
      url: env.AGENT_PUBLIC_URL,
    });
    expect(registered.status, JSON.stringify(registered.body)).toBe(200);
    expect(registered.body.secrets).toEqual({ ONLY_MINE: "claimant-secret" });
    await statusBecomes(id, "online");

    // The pool refills through the control plane, which now counts the claimed member as a workspace.
    const refilled = await poolSuspended(2, [id]);
    expect(refilled.map((machine) => envOf(machine).WORKSPACE_ID)).not.toContain(id);
    await cpPoolsBecome({ members: { suspended: 2 }, unclaimed: 2, claimed: 1 });

    expect((await tenant.call("PUT", "/pools", { runtime: "echo", tier: 2, size: 0 })).status).toBe(200);
    await waitFor("the drained members' machines to be destroyed", async () =>
      liveMachines().every((machine) => envOf(machine).WORKSPACE_ID === id) ? true : undefined,
    );
    await cpPoolsBecome({ members: {}, unclaimed: 0, claimed: 1 });

    // Another pool member made for the org, then the org deleted: nothing of it is left on Fly.
    expect((await tenant.call("PUT", "/pools", { runtime: "echo", tier: 2, size: 1 })).status).toBe(200);
    await poolSuspended(1, [id]);
    expect((await cp.admin("DELETE", `/cp/orgs/${SLUG}`, { confirm: SLUG })).status).toBe(202);
    await waitFor("the org to be deleted", async () => {
      const { body } = await cp.admin("GET", `/cp/orgs/${SLUG}`);
      return body.org.status === "deleted" ? true : undefined;
    });
    expect(liveMachines()).toEqual([]);
    expect(fly.volumes(flyApp)).toHaveLength(0);
    expect(fly.violations).toEqual([]);
    for (const secret of [flyToken, sharedSecret, org.credential, org.adminToken, "claimant-secret"]) {
      expect(cp.output()).not.toContain(secret);
      expect(tenant.output()).not.toContain(secret);
    }
  }, 240_000);
});

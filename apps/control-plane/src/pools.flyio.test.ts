/**
 * Warm pool members a tenant has the control plane make, on the flyio workspace backend against the Fly emulator:
 * each is a machine labelled with its pool, counted per org and pool by the reconciler (never an orphan), reported to
 * the operator by `GET /cp/orgs/:slug/pools`, claimed by the start that resumes it, out of every other org's reach,
 * and destroyed with its org.
 */
import { CpOperationView } from "@molecule/contracts";
import { LABELS } from "@molecule/provisioner-core";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type FlyHarness,
  startFlyHarness,
  TEST_APP,
  TEST_DEPLOYMENT,
} from "../../../packages/provisioner-core/src/flyio/testkit.ts";
import { cpWorkspaces } from "./db/schema.ts";
import { createTestControlPlane, type TenantIdentity, type TestControlPlane } from "./testing.ts";

let fly: FlyHarness;
let cp: TestControlPlane;
let acme: TenantIdentity;
let other: TenantIdentity;

beforeAll(async () => {
  fly = await startFlyHarness();
  cp = await createTestControlPlane({
    provisioner: fly.provisioner,
    settings: { deployment: TEST_DEPLOYMENT },
  });
  acme = await cp.createOrg("pool-acme");
  other = await cp.createOrg("pool-other");
  await cp.runner.drain();
});
afterAll(async () => {
  await cp.close();
  await fly.close();
});

const live = () => fly.emulator.machines(TEST_APP).filter((machine) => machine.state !== "destroyed");
const machineOf = (id: string) =>
  live().find((machine) => (machine.config.env as Record<string, string>).WORKSPACE_ID === id);

/** A pool member's spec as the tenant's filler sends it: its pool token the only credential, its pool label. */
const memberSpec = (id: string, pool?: string) => ({
  workspace_id: id,
  runtime: "echo",
  tier: 2,
  env: { WORKSPACE_ID: id, WORKSPACE_POOL_TOKEN: `mpt_${id}` },
  secret_keys: ["WORKSPACE_POOL_TOKEN"],
  metadata: {},
  ...(pool ? { pool } : {}),
});

async function run(org: TenantIdentity, method: string, path: string, body?: unknown) {
  const accepted = await cp.tenant(org, method, path, body === undefined ? {} : { body });
  expect(accepted.status, `${method} ${path}: ${accepted.text}`).toBe(202);
  await cp.runner.drain();
  const shown = await cp.tenant(org, "GET", `/cp/operations/${accepted.body.operation.id}`);
  const operation = CpOperationView.parse(shown.body);
  expect(operation.status, JSON.stringify(operation.error)).toBe("succeeded");
  return operation;
}

const reconcile = async () => {
  const report = await cp.admin("POST", "/cp/admin/reconcile");
  expect(report.status).toBe(200);
  return report.body;
};

describe("warm pool members on the control plane (flyio)", () => {
  const first = "ws_01jcppool00000000000000001";
  const second = "ws_01jcppool00000000000000002";

  it("makes each member a machine labelled with its pool, counted per org and pool (no orphan), shown to the operator", async () => {
    for (const id of [first, second])
      await run(acme, "POST", "/cp/workspaces/provision", memberSpec(id, "echo-t2"));
    await run(acme, "POST", `/cp/workspaces/${first}/suspend`);
    for (const id of [first, second]) {
      const metadata = (machineOf(id)?.config.metadata ?? {}) as Record<string, string>;
      expect(metadata[LABELS.pool]).toBe("echo-t2");
    }
    expect(machineOf(first)?.state).toBe("suspended");

    const report = await reconcile();
    expect(report.orphans).toBe(0);
    expect(report.resources.byPool).toEqual({ [`${acme.orgId}/echo-t2`]: 2 });

    const pools = await cp.admin("GET", "/cp/orgs/pool-acme/pools");
    expect(pools.status).toBe(200);
    expect(pools.body).toEqual({
      org_id: acme.orgId,
      pools: [
        {
          pool: "echo-t2",
          runtime: "echo",
          tier: 2,
          members: { running: 1, suspended: 1 },
          unclaimed: 2,
          claimed: 0,
        },
      ],
    });
    expect((await cp.admin("GET", "/cp/orgs/pool-other/pools")).body).toEqual({
      org_id: other.orgId,
      pools: [],
    });
    expect((await cp.admin("GET", "/cp/orgs/no-such-org/pools")).status).toBe(404);
    expect((await cp.admin("GET", "/cp/orgs/NOT%20A%20SLUG/pools")).status).toBe(400);
    // A tenant credential is no admin bearer.
    expect((await cp.tenant(acme, "GET", "/cp/orgs/pool-acme/pools")).status).toBe(401);
  });

  it("a pool label that is not <runtime>-t<tier> is a 400 before anything is stored", async () => {
    const id = "ws_01jcppool00000000000000009";
    for (const pool of ["Echo-T2", "echo-t5", "echo", "../echo-t2", "x".repeat(70)]) {
      const refused = await cp.tenant(acme, "POST", "/cp/workspaces/provision", {
        body: memberSpec(id, pool),
      });
      expect(refused.status, pool).toBe(400);
      expect(refused.body.error.code).toBe("bad_request");
    }
    expect(await cp.deps.db.select().from(cpWorkspaces).where(eq(cpWorkspaces.id, id))).toEqual([]);
  });

  it("nothing of one org reaches another's members: its id cannot be taken, started, suspended or destroyed", async () => {
    const taken = await cp.tenant(other, "POST", "/cp/workspaces/provision", {
      body: memberSpec(first, "echo-t2"),
    });
    expect(taken.status).toBe(409);
    for (const [method, path, body] of [
      ["POST", `/cp/workspaces/${first}/start`, { spec: memberSpec(first), recreate: false }],
      ["POST", `/cp/workspaces/${first}/suspend`, {}],
      ["DELETE", `/cp/workspaces/${first}`, undefined],
    ] as const) {
      const refused = await cp.tenant(other, method, path, body === undefined ? {} : { body });
      expect(refused.status, `${method} ${path}`).toBe(404);
    }
    await cp.runner.drain();
    expect(machineOf(first)?.state).toBe("suspended");
    const [row] = await cp.deps.db.select().from(cpWorkspaces).where(eq(cpWorkspaces.id, first));
    expect(row).toMatchObject({ orgId: acme.orgId, pool: "echo-t2", poolClaimedAt: null });
  });

  it("the start that resumes a member claims it: no longer counted in its pool, shown as claimed, the same machine", async () => {
    const machine = machineOf(first)?.id;
    await run(acme, "POST", `/cp/workspaces/${first}/start`, { spec: memberSpec(first), recreate: false });
    expect(machineOf(first)).toMatchObject({ id: machine, state: "started" });
    const report = await reconcile();
    expect(report.orphans).toBe(0);
    expect(report.resources.byPool).toEqual({ [`${acme.orgId}/echo-t2`]: 1 });
    const pools = (await cp.admin("GET", "/cp/orgs/pool-acme/pools")).body.pools;
    expect(pools).toEqual([expect.objectContaining({ members: { running: 1 }, unclaimed: 1, claimed: 1 })]);
    // A later stop and start of the claimed workspace changes nothing of its pool's counts.
    await run(acme, "POST", `/cp/workspaces/${first}/stop`);
    await run(acme, "POST", `/cp/workspaces/${first}/start`, { spec: memberSpec(first), recreate: false });
    expect((await cp.admin("GET", "/cp/orgs/pool-acme/pools")).body.pools).toEqual(pools);
  });

  it("a destroyed member (the pool shrank) leaves its pool; deleting the org leaves no member machine", async () => {
    await run(acme, "DELETE", `/cp/workspaces/${second}`);
    expect(machineOf(second)).toBeUndefined();
    expect((await cp.admin("GET", "/cp/orgs/pool-acme/pools")).body.pools).toEqual([
      expect.objectContaining({ members: {}, unclaimed: 0, claimed: 1 }),
    ]);
    const third = "ws_01jcppool00000000000000003";
    await run(acme, "POST", "/cp/workspaces/provision", memberSpec(third, "echo-t2"));
    await run(acme, "POST", `/cp/workspaces/${third}/suspend`);
    expect(live().length).toBeGreaterThan(0);

    const deleted = await cp.admin("DELETE", "/cp/orgs/pool-acme", { confirm: "pool-acme" });
    expect(deleted.status).toBe(202);
    await cp.runner.drain();
    expect(live()).toEqual([]);
    expect(fly.emulator.volumes(TEST_APP)).toHaveLength(0);
    expect((await cp.admin("GET", "/cp/orgs/pool-acme/pools")).body.pools).toEqual([]);
    expect((await reconcile()).resources.byPool).toEqual({});
    expect(fly.emulator.violations).toEqual([]);
  });
});

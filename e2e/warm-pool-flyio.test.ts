import { poolMembers } from "@molecule/db";
import { LABELS } from "@molecule/provisioner-core";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type FlyHarness,
  startFlyHarness,
  TEST_APP,
  TEST_DEPLOYMENT,
} from "../packages/provisioner-core/src/flyio/testkit.ts";
import { createTestPlatform, type TestPlatform } from "../test-support/platform.ts";
import { waitFor } from "../test-support/wait.ts";

let fly: FlyHarness;
let platform: TestPlatform;

beforeAll(async () => {
  fly = await startFlyHarness();
  // As main() sets it for CONTAINER_BACKEND=flyio.
  platform = await createTestPlatform(fly.provisioner, {
    deployment: TEST_DEPLOYMENT,
    suspendPoolMembers: true,
  });
  await platform.listen();
});
afterAll(async () => {
  await platform.close();
  await fly.close();
});

const live = () => fly.emulator.machines(TEST_APP).filter((m) => m.state !== "destroyed");
const envOf = (machine: { config: { env?: unknown } }) =>
  (machine.config.env ?? {}) as Record<string, string>;
const poolLabelOf = (machine: { config: { metadata?: unknown } }) =>
  ((machine.config.metadata ?? {}) as Record<string, string>)[LABELS.pool];

async function poolOf() {
  const { body } = await platform.call("GET", "/pools");
  return body.pools.find(
    (pool: { runtime: string; tier: number }) => pool.runtime === "echo" && pool.tier === 2,
  );
}

/**
 * The agents would run inside the machines; here the test plays each member's agent: one claim wait (nothing yet)
 * from every running member machine, with the pool token injected into it.
 */
async function membersWait(): Promise<void> {
  for (const machine of live()) {
    const env = envOf(machine);
    if (machine.state !== "started" || !env.WORKSPACE_POOL_TOKEN) continue;
    await platform.callServed("POST", "/registry/claim", {
      token: env.WORKSPACE_POOL_TOKEN,
      body: { id: env.WORKSPACE_ID, wait_seconds: 0 },
    });
  }
}

/** Plays the agents until the pool has `ready` members, each on a suspended machine. */
function poolSuspended(ready: number) {
  return waitFor(
    `the pool to have ${ready} ready suspended members`,
    async () => {
      await membersWait();
      const pool = await poolOf();
      const rows = await platform.database.db
        .select()
        .from(poolMembers)
        .where(eq(poolMembers.state, "ready"));
      const suspended = rows.filter((row) => row.suspendedAt !== null);
      return pool?.ready === ready && pool.starting === 0 && suspended.length === ready ? rows : undefined;
    },
    60_000,
    100,
  );
}

const statusBecomes = (id: string, status: string) =>
  waitFor(`workspace ${id} to be ${status}`, async () => {
    const workspace = (await platform.call("GET", `/workspaces/${id}`)).body;
    return workspace.status === status ? workspace : undefined;
  });

describe("warm pools on the flyio backend, against the Fly emulator", () => {
  it("keeps created-and-suspended machines; a claim resumes one (the same machine), its agent takes the claim and comes online; the pool refills; size 0 destroys the members", async () => {
    expect(
      (await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 2 } })).status,
    ).toBe(200);
    const members = await poolSuspended(2);
    const memberIds = members.map((row) => row.id).sort();
    const machineOf = new Map(live().map((m) => [envOf(m).WORKSPACE_ID, m]));
    for (const id of memberIds) {
      const machine = machineOf.get(id);
      expect(machine?.state).toBe("suspended");
      expect(poolLabelOf(machine ?? { config: {} })).toBe("echo-t2");
      expect(envOf(machine ?? { config: {} }).WORKSPACE_BOOT_TOKEN).toBeUndefined();
    }
    const report = (await platform.call("POST", "/admin/reconcile")).body;
    expect(report.orphans).toBe(0);
    expect(report.resources.byPool).toEqual({ "echo-t2": 2 });

    // Three creates at once against two members: two claim one each (resumed by a start), one provisions cold.
    const created = await Promise.all(
      [0, 1, 2].map((i) =>
        platform.call("POST", "/workspaces", {
          body: { name: `fly-${i}`, runtime: "echo", tier: 2, secrets: { ONLY_MINE: `value-${i}` } },
        }),
      ),
    );
    const claimed = created.filter((answer) => answer.body.operation.kind === "start");
    const cold = created.filter((answer) => answer.body.operation.kind === "provision");
    expect(claimed).toHaveLength(2);
    expect(cold).toHaveLength(1);
    expect(claimed.map((answer) => answer.body.workspace.id).sort()).toEqual(memberIds);

    for (const answer of claimed) {
      const id: string = answer.body.workspace.id;
      await statusBecomes(id, "awaiting_agent");
      const machine = live().find((m) => envOf(m).WORKSPACE_ID === id);
      // Resumed, not made again: the machine the member was started as.
      expect(machine?.id).toBe(machineOf.get(id)?.id);
      expect(machine?.state).toBe("started");
      // Its agent, resumed mid-wait, asks again and gets the claim; registering answers its own secrets only.
      const waited = await platform.callServed("POST", "/registry/claim", {
        token: envOf(machine ?? { config: {} }).WORKSPACE_POOL_TOKEN,
        body: { id, wait_seconds: 0 },
      });
      expect(waited.status).toBe(200);
      expect(waited.body).toMatchObject({
        claimed: true,
        workspace_id: id,
        name: answer.body.workspace.name,
      });
      const registered = await platform.call("POST", "/registry/register", {
        token: waited.body.boot_token,
        body: { id },
      });
      expect(registered.status).toBe(200);
      const i = Number(String(answer.body.workspace.name).slice(-1));
      expect(registered.body.secrets).toEqual({ ONLY_MINE: `value-${i}` });
      await statusBecomes(id, "online");
    }

    // The pool starts two new machines to replace the claimed ones.
    const refilled = await poolSuspended(2);
    expect(refilled.map((row) => row.id).filter((id) => memberIds.includes(id))).toEqual([]);

    await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 0 } });
    await waitFor("the drained members' machines to be destroyed", async () => {
      const rows = await platform.database.db.select().from(poolMembers);
      const members = live().filter(
        (m) => poolLabelOf(m) && !memberIds.includes(envOf(m).WORKSPACE_ID ?? ""),
      );
      return rows.every((row) => row.state === "claimed") && members.length === 0 ? true : undefined;
    });
    for (const answer of created) await platform.call("DELETE", `/workspaces/${answer.body.workspace.id}`);
    for (const answer of created) await statusBecomes(answer.body.workspace.id, "removed");
    expect(live()).toEqual([]);
    expect(fly.emulator.volumes(TEST_APP)).toHaveLength(0);
  }, 120_000);
});

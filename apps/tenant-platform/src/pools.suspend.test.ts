/**
 * Suspended pool members (flyio): the filler suspends a ready member only when its backend would suspend a workspace
 * of its tier. Fly stops a machine above its memory limit instead, which the filler would take for a failure and
 * replace, starting a new member every round; such a tier's members wait running.
 */
import { poolMembers } from "@molecule/db";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { waitFor } from "../../../test-support/wait.ts";

let fake: FakeProvisioner;
let platform: TestPlatform;

beforeAll(async () => {
  fake = createFakeProvisioner({ suspendMaxMemoryMb: 2048 });
  platform = await createTestPlatform(fake, { suspendPoolMembers: true });
  await platform.listen();
});
afterAll(() => platform.close());

/** Plays each member's agent: one claim wait (nothing yet) from every running instance with a pool token. */
async function membersWait(): Promise<void> {
  for (const workspace of fake.workspaces()) {
    const instance = workspace.instance;
    if (instance?.state !== "running" || !instance.env.WORKSPACE_POOL_TOKEN) continue;
    await platform.callServed("POST", "/registry/claim", {
      token: instance.env.WORKSPACE_POOL_TOKEN,
      body: { id: workspace.workspaceId, wait_seconds: 0 },
    });
  }
}

describe("suspending warm pool members by tier", () => {
  it("suspends tier 2 members; tier 4 members (above the backend's suspend limit) stay running and are kept", async () => {
    for (const tier of [2, 4]) {
      expect(
        (await platform.call("PUT", "/pools", { body: { runtime: "echo", tier, size: 1 } })).status,
      ).toBe(200);
    }
    const members = await waitFor(
      "a suspended tier 2 member and a ready tier 4 member",
      async () => {
        await membersWait();
        const rows = await platform.database.db.select().from(poolMembers);
        const small = rows.find((row) => row.tier === 2 && row.state === "ready" && row.suspendedAt !== null);
        const big = rows.find((row) => row.tier === 4 && row.state === "ready");
        return rows.length === 2 && small && big ? { small, big } : undefined;
      },
      30_000,
      50,
    );
    expect(fake.inspect(members.small.id)?.instance?.state).toBe("suspended");
    // Rounds later, the same tier 4 member: never suspended (stopped), never replaced.
    for (let round = 0; round < 3; round++) {
      await membersWait();
      await platform.pools.fill();
    }
    const rows = await platform.database.db.select().from(poolMembers);
    expect(rows.map((row) => row.id).sort()).toEqual([members.small.id, members.big.id].sort());
    expect(rows.find((row) => row.id === members.big.id)).toMatchObject({
      state: "ready",
      suspendedAt: null,
    });
    expect(fake.inspect(members.big.id)?.instance?.state).toBe("running");
  });
});

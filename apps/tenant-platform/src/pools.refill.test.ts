import { createIdGenerator } from "@molecule/contracts";
import { poolMembers, pools } from "@molecule/db";
import { hashToken, mintToken } from "@molecule/identity";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { waitFor } from "../../../test-support/wait.ts";

let platform: TestPlatform;
let fillerWakes = 0;
const ids = createIdGenerator();

beforeAll(async () => {
  // Waits that end at the agent's registration, not at the fallback (set short in the test that needs it).
  platform = await createTestPlatform(createFakeProvisioner(), { refillAfterClaimMaxMs: 10 * 60_000 });
  await platform.listen();
  // No filler rounds: what is counted is what the claim tells the filler.
  await platform.pools.stop();
  platform.pools.wake = () => {
    fillerWakes++;
  };
});
afterAll(() => platform.close());

/** A ready member whose agent is waiting for its claim, as the filler and the first wait leave it. */
async function readyMember(): Promise<{ id: string; poolToken: string }> {
  const id = ids.next("ws");
  const poolToken = mintToken("mpt");
  await platform.database.db.insert(poolMembers).values({
    id,
    orgId: "org_test",
    runtime: "echo",
    tier: 2,
    state: "ready",
    image: "echo:backend-default",
    handle: { backend: "fake" },
    waitTokenHash: hashToken(poolToken),
    agentWaitingAt: platform.clock.now(),
    readyAt: platform.clock.now(),
  });
  return { id, poolToken };
}

async function claim(name: string): Promise<string> {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo", tier: 2 } });
  expect(created.status).toBe(202);
  expect(created.body.workspace.status).toBe("awaiting_agent");
  return created.body.workspace.id;
}

describe("the replacement of a claimed pool member", () => {
  it("is asked of the filler once the claimed workspace's agent has registered, not beside its registration", async () => {
    const member = await readyMember();
    const waiting = platform.callServed("POST", "/registry/claim", {
      token: member.poolToken,
      body: { id: member.id, wait_seconds: 20 },
    });
    const before = fillerWakes;
    expect(await claim("claimed-then-registered")).toBe(member.id);
    const delivered = await waiting;
    expect(delivered.body).toMatchObject({ claimed: true, workspace_id: member.id });
    expect(fillerWakes).toBe(before);

    const registered = await platform.callServed("POST", "/registry/register", {
      token: delivered.body.boot_token,
      body: { id: member.id, url: "http://127.0.0.1:9" },
    });
    expect(registered.body.status).toBe("online");
    await waitFor(
      "the filler to be told",
      async () => (fillerWakes === before + 1 ? true : undefined),
      10_000,
      10,
    );
  });

  it("is asked anyway when the claimed agent does not register", async () => {
    platform.deps.settings.refillAfterClaimMaxMs = 50;
    const member = await readyMember();
    const before = fillerWakes;
    expect(await claim("claimed-never-registered")).toBe(member.id);
    await waitFor(
      "the filler to be told",
      async () => (fillerWakes === before + 1 ? true : undefined),
      10_000,
      20,
    );
  });

  it("is never a member on an image the pool has moved off: that create provisions cold", async () => {
    const stale = await readyMember();
    // A newer replica took the pool over on another image (its filler retires the old members next round).
    await platform.database.db
      .insert(pools)
      .values({ orgId: "org_test", runtime: "echo", tier: 2, size: 1, image: "echo:newer" })
      .onConflictDoUpdate({ target: [pools.orgId, pools.runtime, pools.tier], set: { image: "echo:newer" } });
    const cold = await platform.call("POST", "/workspaces", {
      body: { name: "cold-while-the-pool-moves", runtime: "echo", tier: 2 },
    });
    expect(cold.status).toBe(202);
    expect(cold.body.workspace.id).not.toBe(stale.id);
    expect(cold.body.workspace.status).toBe("provisioning");
    const [row] = await platform.database.db.select().from(poolMembers).where(eq(poolMembers.id, stale.id));
    expect(row?.state).toBe("ready");
    // Back on its image, the same member is claimed.
    await platform.database.db.update(pools).set({ image: "echo:backend-default" });
    expect(await claim("warm-again")).toBe(stale.id);
  });
});

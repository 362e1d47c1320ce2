import { createIdGenerator } from "@molecule/contracts";
import { poolMembers } from "@molecule/db";
import { hashToken, mintToken } from "@molecule/identity";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, errorOf, type TestPlatform } from "../../../test-support/platform.ts";

let platform: TestPlatform;
const ids = createIdGenerator();
const memberId = ids.next("ws");
const poolToken = mintToken("mpt");

beforeAll(async () => {
  platform = await createTestPlatform(createFakeProvisioner());
  await platform.listen();
  // No filler: it would remove this member, of a pool with no target.
  await platform.pools.stop();
  // A member as the filler leaves it once started: its handle in, its agent not heard from yet.
  await platform.database.db.insert(poolMembers).values({
    id: memberId,
    orgId: "org_test",
    runtime: "echo",
    tier: 2,
    state: "starting",
    image: "echo:backend-default",
    handle: { backend: "fake" },
    waitTokenHash: hashToken(poolToken),
  });
});
afterAll(() => platform.close());

const wait = (token: string, body: unknown) =>
  platform.callServed("POST", "/registry/claim", { token, body });

describe("POST /registry/claim", () => {
  it("takes only the member's own pool token for its own id; the first wait makes a started member ready", async () => {
    for (const [token, id] of [
      [mintToken("mpt"), memberId],
      [poolToken, ids.next("ws")],
      ["test-admin-token-0123456789abcdef", memberId],
    ] as const) {
      const refused = await wait(token, { id, wait_seconds: 0 });
      expect(refused.status).toBe(401);
      expect(errorOf(refused).code).toBe("unauthorized");
    }
    const [before] = await platform.database.db
      .select()
      .from(poolMembers)
      .where(eq(poolMembers.id, memberId));
    expect(before).toMatchObject({ state: "starting", agentWaitingAt: null });

    const answer = await wait(poolToken, { id: memberId, wait_seconds: 0 });
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({ claimed: false });
    const [after] = await platform.database.db.select().from(poolMembers).where(eq(poolMembers.id, memberId));
    expect(after?.state).toBe("ready");
    expect(after?.agentWaitingAt).not.toBeNull();
    expect((await platform.call("GET", "/workspaces")).body.workspaces).toEqual([]);
  });

  it("a wait in progress ends with nothing yet when the platform's event bus closes (shutdown), not at its end", async () => {
    const waiting = wait(poolToken, { id: memberId, wait_seconds: 60 });
    // Once the wait has renewed the member, it is waiting on the bus.
    const renewed = (
      await platform.database.db.select().from(poolMembers).where(eq(poolMembers.id, memberId))
    )[0]?.agentWaitingAt;
    for (;;) {
      const [row] = await platform.database.db.select().from(poolMembers).where(eq(poolMembers.id, memberId));
      if (row?.agentWaitingAt && row.agentWaitingAt.getTime() !== renewed?.getTime()) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    platform.deps.events.close();
    const answer = await waiting;
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({ claimed: false });
  });
});

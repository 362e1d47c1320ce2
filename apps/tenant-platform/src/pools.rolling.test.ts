/**
 * A rolling upgrade: two replicas on one database, started with different WORKSPACE_IMAGE_TAGs, both filling the same
 * warm pool. The pool's image is the newest replica's, so the older one neither starts members on its own image nor
 * destroys the newer one's: after one replacement the members stay put, whichever replica fills. Once the newest
 * replica has gone quiet, the remaining one takes the pool over.
 */
import { poolMembers } from "@molecule/db";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { POOL_IMAGE_OWNER_QUIET_MS } from "./services/pool-filler.ts";

const OLD = "molecule/workspace-echo:v1";
const NEW = "molecule/workspace-echo:v2";
let older: TestPlatform;
let newer: TestPlatform;

beforeAll(async () => {
  // One backend both replicas talk to, as they would.
  const backend = createFakeProvisioner();
  const on = (tag: string) => ({ workspaceImage: { prefix: "molecule/workspace-", tag } });
  older = await createTestPlatform(backend, on("v1"), { runnerId: "replica-old" });
  newer = await createTestPlatform(backend, on("v2"), { runnerId: "replica-new", database: older.database });
});
afterAll(async () => {
  await newer?.close();
  await older?.close();
});

/** Every live member, id → image. */
async function members(): Promise<Map<string, string>> {
  const rows = await older.database.db.select().from(poolMembers);
  return new Map(rows.filter((row) => row.state !== "removing").map((row) => [row.id, row.image]));
}

describe("a warm pool filled by two replicas on different image tags", () => {
  it("converges on the newest replica's image and then neither replica replaces a member", async () => {
    expect((await older.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 2 } })).status).toBe(
      200,
    );
    expect(await older.pools.fill()).toMatchObject({ started: 2, removed: 0 });
    expect([...(await members()).values()]).toEqual([OLD, OLD]);

    // The new replica's first round: the pool is on its image now, and the old members are replaced.
    await newer.pools.fill();
    await newer.pools.fill();
    const settled = await members();
    expect([...settled.values()]).toEqual([NEW, NEW]);
    expect((await older.call("GET", "/pools")).body.pools[0]).toMatchObject({ image: NEW, starting: 2 });

    // Both keep filling, in turns: nothing is started or destroyed any more.
    for (let round = 0; round < 3; round++) {
      expect(await older.pools.fill()).toEqual({ started: 0, failed: 0, removed: 0 });
      expect(await newer.pools.fill()).toEqual({ started: 0, failed: 0, removed: 0 });
    }
    expect(await members()).toEqual(settled);
  });

  it("the remaining replica takes the pool over once the newest has gone quiet", async () => {
    // The new replica stops (its rounds stop renewing the pool's image); a minute later the old one takes over.
    older.clock.advance(POOL_IMAGE_OWNER_QUIET_MS - 1_000);
    expect(await older.pools.fill()).toEqual({ started: 0, failed: 0, removed: 0 });
    older.clock.advance(2_000);
    await older.pools.fill();
    await older.pools.fill();
    expect([...(await members()).values()]).toEqual([OLD, OLD]);
    expect((await older.call("GET", "/pools")).body.pools[0]).toMatchObject({ image: OLD, starting: 2 });
  });
});

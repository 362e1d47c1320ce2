/**
 * Retention: finished operations and reconcile passes older than OPERATION_RETENTION_DAYS (and the warm pool members
 * claimed by workspaces removed as long ago), and backup runs older than
 * BACKUP_RECORD_RETENTION_DAYS, are deleted, once across replicas; pending and running operations, the newest
 * reconcile pass, the newest and newest good backup run and every workspace row (removed ones included) stay,
 * whatever their age.
 */
import { createIdGenerator } from "@molecule/contracts";
import { backupRuns, operations, poolMembers, reconcileRuns, workspaces } from "@molecule/db";
import { hashToken, mintToken } from "@molecule/identity";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { createTenantReconciler } from "./services/reconcile.ts";
import { createTenantRetention, TENANT_RETENTION_LOCK } from "./services/retention.ts";

const DAY = 86_400_000;
const RETENTION = 30 * DAY;
const BACKUP_RETENTION = 90 * DAY;
const settings = { operationsMs: RETENTION, backupRecordsMs: BACKUP_RETENTION, sweepIntervalMs: 60_000 };
let platform: TestPlatform;

beforeAll(async () => {
  platform = await createTestPlatform(createFakeProvisioner());
});
afterAll(() => platform.close());

async function create(name: string): Promise<{ workspaceId: string; operationId: string }> {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  expect(created.status).toBe(202);
  return { workspaceId: created.body.workspace.id, operationId: created.body.operation.id };
}

/** Moves an operation's timestamps `ageMs` into the past (and its status, when given). */
async function age(
  operationId: string,
  ageMs: number,
  status?: "pending" | "running" | "failed",
): Promise<void> {
  const then = new Date(platform.clock.now().getTime() - ageMs);
  await platform.deps.db
    .update(operations)
    .set({
      createdAt: then,
      updatedAt: then,
      finishedAt: status === "pending" || status === "running" ? null : then,
      ...(status ? { status } : {}),
      ...(status === "running" ? { lockedBy: "elsewhere", lockedUntil: new Date(Date.now() + DAY) } : {}),
    })
    .where(eq(operations.id, operationId));
}

async function operationIds(): Promise<string[]> {
  const rows = await platform.deps.db.select({ id: operations.id }).from(operations);
  return rows.map((row) => row.id).sort();
}

describe("retention of finished operations", () => {
  it("deletes exactly the finished operations past the retention and keeps the rest and every workspace", async () => {
    const oldSucceeded = await create("old-succeeded");
    const oldFailed = await create("old-failed");
    const recent = await create("recent");
    const oldPending = await create("old-pending");
    const oldRunning = await create("old-running");
    // Everything but the last two runs now; those two stay queued and running (elsewhere) below.
    await age(oldPending.operationId, RETENTION + DAY, "pending");
    await age(oldRunning.operationId, RETENTION + DAY, "running");
    await platform.deps.db
      .update(operations)
      .set({ runAfter: new Date(platform.clock.now().getTime() + DAY) })
      .where(eq(operations.id, oldPending.operationId));
    await platform.runner.drain();
    // A removed workspace: its row stays, and its old destroy operation goes.
    expect((await platform.call("DELETE", `/workspaces/${oldSucceeded.workspaceId}`)).status).toBe(202);
    await platform.runner.drain();
    const [destroy] = await platform.deps.db
      .select({ id: operations.id })
      .from(operations)
      .where(sql`${operations.workspaceId} = ${oldSucceeded.workspaceId} and ${operations.kind} = 'destroy'`);
    if (!destroy) throw new Error("no destroy operation");
    await age(oldSucceeded.operationId, RETENTION + DAY);
    await age(destroy.id, RETENTION + 1);
    await age(oldFailed.operationId, RETENTION + DAY, "failed");
    // Just inside the retention: kept. (A minute inside: the test clock runs on with real time, and a busy machine
    // took more than the second this once was between here and the next test's sweep.)
    await age(recent.operationId, RETENTION - 60_000);
    const workspacesBefore = await platform.deps.db.select().from(workspaces).orderBy(workspaces.id);
    expect(workspacesBefore.find((row) => row.id === oldSucceeded.workspaceId)?.status).toBe("removed");

    const retention = createTenantRetention(platform.deps, settings);
    expect(await retention.sweep()).toEqual({
      operations: 3,
      reconcileRuns: 0,
      poolMembers: 0,
      backupRecords: 0,
    });
    expect(await operationIds()).toEqual(
      [recent.operationId, oldPending.operationId, oldRunning.operationId].sort(),
    );
    expect(await platform.deps.db.select().from(workspaces).orderBy(workspaces.id)).toEqual(workspacesBefore);
    expect(await retention.sweep()).toEqual({
      operations: 0,
      reconcileRuns: 0,
      poolMembers: 0,
      backupRecords: 0,
    });
  });

  it("skips its pass while another replica holds the retention lock", async () => {
    const { operationId } = await create("held");
    await platform.runner.drain();
    await age(operationId, RETENTION + DAY);
    const retention = createTenantRetention(platform.deps, settings);
    const outcome = await platform.deps.advisoryLock(TENANT_RETENTION_LOCK, () => retention.sweep());
    expect(outcome).toEqual({ acquired: true, value: null });
    expect(await operationIds()).toContain(operationId);
    expect(await retention.sweep()).toEqual({
      operations: 1,
      reconcileRuns: 0,
      poolMembers: 0,
      backupRecords: 0,
    });
    expect(await operationIds()).not.toContain(operationId);
  });

  it("deletes reconcile passes past the retention but always keeps the newest, which the stats show", async () => {
    const reconciler = createTenantReconciler(platform.deps, "retention-test");
    const oldest = await reconciler.run();
    platform.clock.advance(DAY);
    const newest = await reconciler.run();
    platform.clock.advance(RETENTION + DAY);
    const retention = createTenantRetention(platform.deps, settings);
    // Both are past the retention now: the older goes, the newest stays.
    expect((await retention.sweep())?.reconcileRuns).toBe(1);
    const kept = await platform.deps.db.select().from(reconcileRuns);
    expect(kept.map((run) => run.startedAt.toISOString())).toEqual([newest.at]);
    expect(kept.map((run) => run.startedAt.toISOString())).not.toContain(oldest.at);
    expect((await platform.call("GET", "/admin/stats")).body.lastReconcile.at).toBe(newest.at);
    const latest = await reconciler.run();
    expect((await retention.sweep())?.reconcileRuns).toBe(1);
    expect(
      (await platform.deps.db.select().from(reconcileRuns)).map((run) => run.startedAt.toISOString()),
    ).toEqual([latest.at]);
  });
});

describe("retention of warm pool members", () => {
  /** A member row as the filler and a claim leave it: claimed `claimedAgoMs` ago, or still in its pool. */
  async function member(id: string, state: "claimed" | "ready", claimedAgoMs = 0): Promise<void> {
    const claimedAt = new Date(platform.clock.now().getTime() - claimedAgoMs);
    await platform.deps.db.insert(poolMembers).values({
      id,
      orgId: "org_test",
      runtime: "echo",
      tier: 3,
      state,
      image: "echo:backend-default",
      handle: { backend: "fake" },
      waitTokenHash: hashToken(mintToken("mpt")),
      createdAt: new Date(claimedAt.getTime() - 60_000),
      ...(state === "claimed" ? { readyAt: claimedAt, claimedAt } : {}),
    });
  }
  async function removedAgo(workspaceId: string, ageMs: number): Promise<void> {
    expect((await platform.call("DELETE", `/workspaces/${workspaceId}`)).status).toBe(202);
    await platform.runner.drain();
    await platform.deps.db
      .update(workspaces)
      .set({ updatedAt: new Date(platform.clock.now().getTime() - ageMs) })
      .where(eq(workspaces.id, workspaceId));
  }
  const memberIds = async () =>
    (await platform.deps.db.select({ id: poolMembers.id }).from(poolMembers)).map((row) => row.id).sort();
  const claimedCount = async () =>
    (await platform.call("GET", "/pools")).body.pools.find((pool: { tier: number }) => pool.tier === 3)
      ?.claimed;

  it("deletes the rows of members claimed by workspaces removed past the retention, and keeps what GET /pools counts", async () => {
    // The pool has no target: its filler must not touch the rows this test writes.
    await platform.pools.stop();
    expect(
      (await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 3, size: 0 } })).status,
    ).toBe(200);
    const live = await create("claimed-live");
    const removedLongAgo = await create("claimed-removed-long-ago");
    const removedRecently = await create("claimed-removed-recently");
    await platform.runner.drain();
    // A claim gives the workspace the member's id: the rows below stand for the members those creates claimed.
    await member(live.workspaceId, "claimed", RETENTION + DAY);
    await member(removedLongAgo.workspaceId, "claimed", RETENTION + DAY);
    await member(removedRecently.workspaceId, "claimed", RETENTION + DAY);
    await removedAgo(removedLongAgo.workspaceId, RETENTION + 1_000);
    await removedAgo(removedRecently.workspaceId, RETENTION - 1_000);
    // Claimed long ago by a workspace whose row is gone, and one still waiting in its pool for as long.
    const ids = createIdGenerator();
    const withoutWorkspace = ids.next("ws");
    const waiting = ids.next("ws");
    await member(withoutWorkspace, "claimed", RETENTION + DAY);
    await member(waiting, "ready", RETENTION + DAY);
    expect(await claimedCount()).toBe(1);

    const retention = createTenantRetention(platform.deps, settings);
    expect((await retention.sweep())?.poolMembers).toBe(2);
    expect(await memberIds()).toEqual([live.workspaceId, removedRecently.workspaceId, waiting].sort());
    expect(await claimedCount()).toBe(1);
    expect((await retention.sweep())?.poolMembers).toBe(0);

    platform.clock.advance(1_000);
    expect((await retention.sweep())?.poolMembers).toBe(1);
    expect(await memberIds()).toEqual([live.workspaceId, waiting].sort());
    expect(await claimedCount()).toBe(1);
  });
});

describe("retention of backup runs", () => {
  /** A run started `ageMs` ago that took a minute (still running when `status` is running). */
  async function run(location: string, status: "running" | "succeeded" | "failed", ageMs: number) {
    const startedAt = new Date(platform.clock.now().getTime() - ageMs);
    await platform.deps.db.insert(backupRuns).values({
      status,
      location,
      format: "pg_dump_custom",
      startedAt,
      finishedAt: status === "running" ? null : new Date(startedAt.getTime() + 60_000),
    });
  }
  const locations = async () =>
    (await platform.deps.db.select({ location: backupRuns.location }).from(backupRuns))
      .map((row) => row.location)
      .sort();

  it("deletes finished runs past the retention, but keeps the newest run, the newest good one and any running one", async () => {
    const retention = createTenantRetention(platform.deps, settings);
    await run("stuck-running", "running", 300 * DAY);
    await run("old-good", "succeeded", 200 * DAY);
    await run("old-failed", "failed", 150 * DAY);
    await run("newest-good", "succeeded", 120 * DAY);
    await run("newer-failed", "failed", 100 * DAY);
    await run("newest", "failed", 10 * DAY);
    // The newest run (what says a backup is due) is inside the retention; the newest good one is past it and stays.
    expect((await retention.sweep())?.backupRecords).toBe(3);
    expect(await locations()).toEqual(["newest", "newest-good", "stuck-running"]);
    expect((await retention.sweep())?.backupRecords).toBe(0);

    // Past the retention, the newest run stays too, whatever its outcome.
    platform.clock.advance(BACKUP_RETENTION);
    expect((await retention.sweep())?.backupRecords).toBe(0);
    // A newer good run and one running now take their places: the two they replace go, the stuck running one stays.
    await run("latest-good", "succeeded", DAY);
    await run("latest", "running", 0);
    expect((await retention.sweep())?.backupRecords).toBe(2);
    expect(await locations()).toEqual(["latest", "latest-good", "stuck-running"]);
  });
});

/**
 * The reconciler keeps its passes and its orphans' first sightings in the database: another replica's stats show the
 * last pass whoever ran it, and the orphan grace period counts from the first sighting across a restart. Two tenant
 * platforms on one PostgreSQL database stand for two replicas (or one process and its restart).
 */
import { AdminStats, createIdGenerator } from "@molecule/contracts";
import { orphanSightings, reconcileRuns } from "@molecule/db";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { createTenantReconciler } from "./services/reconcile.ts";

const GRACE_MS = 60 * 60_000;
const reconcile = { intervalMs: 30 * 60_000, deleteOrphans: true, orphanGraceMs: GRACE_MS };
let fake: FakeProvisioner;
let first: TestPlatform;
let second: TestPlatform | undefined;

beforeAll(async () => {
  fake = createFakeProvisioner();
  first = await createTestPlatform(fake, { reconcile });
});
afterAll(async () => {
  await second?.close();
  await first.close();
});

/** A workspace of this deployment (volume and instance) that no row or audit claims: two orphans. */
async function strayInstance(): Promise<string> {
  const workspaceId = createIdGenerator().next("ws");
  await fake.provision(
    {
      workspaceId,
      orgId: "org_test",
      deployment: "test",
      runtime: "echo",
      tier: 2,
      env: {},
      secretKeys: [],
      metadata: {},
    },
    null,
  );
  return workspaceId;
}

describe("reconcile passes and orphan sightings in the database", () => {
  it("a second replica's stats show the pass the first one ran, with its replica, duration and findings", async () => {
    const stray = await strayInstance();
    const report = await createTenantReconciler(first.deps, "replica-a").run();
    expect(report).toMatchObject({ replica: "replica-a", orphans: 2, deleted: 0 });

    second = await createTestPlatform(fake, { reconcile }, { database: first.database });
    const stats = await second.call("GET", "/admin/stats");
    expect(stats.status).toBe(200);
    const parsed = AdminStats.parse(stats.body);
    expect(parsed.lastReconcile).toEqual({
      at: report.at,
      replica: "replica-a",
      durationMs: report.durationMs,
      orphans: 2,
      ghosts: 0,
      deleted: 0,
      deleteOrphans: true,
      orphanGraceMs: GRACE_MS,
      errors: [],
    });
    expect(parsed.orphans).toBe(2);
    expect(parsed.orphanList.map((orphan) => [orphan.kind, orphan.workspace_id]).sort()).toEqual([
      ["instance", stray],
      ["volume", stray],
    ]);
    const runs = await second.deps.db.select().from(reconcileRuns);
    expect(runs).toEqual([
      expect.objectContaining({ replica: "replica-a", orphans: 2, ghosts: 0, deleted: 0 }),
    ]);
    await fake.destroy({ workspaceId: stray, orgId: "org_test", handle: null });
    await createTenantReconciler(first.deps, "replica-a").run();
  });

  it("the grace period counts from the first sighting across a restart: the new process deletes the orphan on time", async () => {
    const stray = await strayInstance();
    const before = await createTenantReconciler(first.deps, "before-restart").run();
    const sighted = before.orphanList.find((orphan) => orphan.workspace_id === stray);
    expect(sighted).toMatchObject({ deleted: false, age_ms: 0 });
    const sightings = await first.deps.db.select().from(orphanSightings);
    expect(sightings.map((row) => [row.kind, row.firstSeenAt.toISOString()]).sort()).toEqual([
      ["instance", sighted?.first_seen_at],
      ["volume", sighted?.first_seen_at],
    ]);

    // The process restarts (a new reconciler, nothing in memory) once the grace period has passed.
    const restarted = await createTestPlatform(fake, { reconcile }, { database: first.database });
    try {
      restarted.clock.advance(GRACE_MS);
      const after = await createTenantReconciler(restarted.deps, "after-restart").run();
      const orphans = after.orphanList.filter((o) => o.workspace_id === stray);
      expect(orphans).toHaveLength(2);
      for (const orphan of orphans) {
        expect(orphan).toMatchObject({ deleted: true, first_seen_at: sighted?.first_seen_at });
        expect(orphan.age_ms).toBeGreaterThanOrEqual(GRACE_MS);
      }
      expect(fake.inspect(stray)).toBeUndefined();
      expect(await restarted.deps.db.select().from(orphanSightings)).toEqual([]);
    } finally {
      await restarted.close();
    }
  });
});

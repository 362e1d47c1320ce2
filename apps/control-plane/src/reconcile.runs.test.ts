/**
 * The control plane's reconcile passes live in its database (cp_reconcile_runs): the stats of another replica on the
 * same database show the last pass, whoever ran it.
 */
import { AdminStats, ReconcileReport } from "@molecule/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cpReconcileRuns } from "./db/schema.ts";
import { createControlPlaneReconciler } from "./services/reconcile.ts";
import { createTestControlPlane, type TestControlPlane } from "./testing.ts";

let first: TestControlPlane;
let second: TestControlPlane;

beforeAll(async () => {
  first = await createTestControlPlane();
  second = await createTestControlPlane({ database: first.db });
});
afterAll(async () => {
  await second.close();
  await first.close();
});

describe("the control plane's reconcile passes", () => {
  it("are shown by another replica's stats, with the replica that ran them", async () => {
    const before = AdminStats.parse((await second.admin("GET", "/cp/admin/stats")).body);
    expect(before.lastReconcile).toBeNull();
    await first.createOrg("runs-org");
    await first.runner.drain();

    const report = ReconcileReport.parse(
      await createControlPlaneReconciler(first.deps, "cp-replica-a").run(),
    );
    const stats = AdminStats.parse((await second.admin("GET", "/cp/admin/stats")).body);
    const { orphanList, ghostList, resources, ...last } = report;
    expect(stats.lastReconcile).toEqual(last);
    expect(stats.lastReconcile?.replica).toBe("cp-replica-a");
    expect(stats.resources).toEqual(resources);
    expect(stats.resources.byOrg).not.toEqual({});
    expect(stats.orphanList).toEqual(orphanList);
    expect(stats.ghostList).toEqual(ghostList);

    // A pass on the second replica is the newest for both.
    const later = await second.admin("POST", "/cp/admin/reconcile");
    expect(later.status).toBe(200);
    const fromFirst = AdminStats.parse((await first.admin("GET", "/cp/admin/stats")).body);
    expect(fromFirst.lastReconcile?.at).toBe(later.body.at);
    expect(await first.db.db.select().from(cpReconcileRuns)).toHaveLength(2);
  });
});

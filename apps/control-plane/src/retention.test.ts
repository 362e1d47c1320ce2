/**
 * Retention on the control plane: finished operations past OPERATION_RETENTION_DAYS, boot events past
 * EVENT_RETENTION_DAYS, tenants' backup reports past BACKUP_RECORD_RETENTION_DAYS and nonces past their replay window
 * are deleted, once across replicas; pending and running operations, each org's newest and newest good backup
 * report, workspaces and orgs (a deleted org's tombstone included) stay, whatever their age.
 */
import { asc } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  cpBootEvents,
  cpOperations,
  cpOrgs,
  cpRequestNonces,
  cpTenantBackups,
  cpWorkspaces,
} from "./db/schema.ts";
import { CP_RETENTION_LOCK, createCpRetention } from "./services/retention.ts";
import { createTestControlPlane, type TestControlPlane } from "./testing.ts";

const DAY = 86_400_000;
const settings = {
  operationsMs: 30 * DAY,
  eventsMs: 7 * DAY,
  backupRecordsMs: 90 * DAY,
  sweepIntervalMs: 60_000,
};
let cp: TestControlPlane;

beforeAll(async () => {
  cp = await createTestControlPlane();
});
afterAll(() => cp.close());

const ago = (ms: number) => new Date(cp.clock.now().getTime() - ms);

async function seed(): Promise<void> {
  const { db } = cp.deps;
  const old = ago(400 * DAY);
  await db.insert(cpOrgs).values([
    { id: "org_live", slug: "live", name: "Live", status: "ready", createdAt: old, updatedAt: old },
    // A tombstone: deleted long ago, kept for audit.
    {
      id: "org_gone",
      slug: "gone",
      name: "Gone",
      status: "deleted",
      createdAt: old,
      updatedAt: old,
      deletedAt: old,
    },
  ]);
  await db.insert(cpWorkspaces).values({
    id: "ws_old",
    orgId: "org_live",
    runtime: "echo",
    tier: 1,
    state: "destroyed",
    createdAt: old,
    updatedAt: old,
  });
  const operation = (id: string, status: "pending" | "running" | "succeeded" | "failed", ageMs: number) => {
    const at = ago(ageMs);
    const finished = status === "succeeded" || status === "failed";
    return {
      id,
      orgId: id.includes("gone") ? "org_gone" : "org_live",
      workspaceId: "ws_old",
      subject: id,
      kind: "provision" as const,
      status,
      createdAt: at,
      updatedAt: at,
      runAfter: status === "pending" ? ago(-DAY) : at,
      finishedAt: finished ? at : null,
      ...(status === "running" ? { lockedBy: "elsewhere", lockedUntil: ago(-DAY) } : {}),
    };
  };
  await db
    .insert(cpOperations)
    .values([
      operation("op_old_succeeded", "succeeded", 31 * DAY),
      operation("op_old_failed", "failed", 31 * DAY),
      operation("op_gone_destroy", "succeeded", 90 * DAY),
      operation("op_recent", "succeeded", 29 * DAY),
      operation("op_old_pending", "pending", 90 * DAY),
      operation("op_old_running", "running", 90 * DAY),
    ]);
  await db.insert(cpRequestNonces).values([
    { orgId: "org_live", nonce: "expired", expiresAt: ago(1) },
    { orgId: "org_live", nonce: "in-window", expiresAt: ago(-60_000) },
  ]);
  await db.insert(cpBootEvents).values([
    { orgId: "org_live", stage: "ready", at: ago(8 * DAY) },
    { orgId: "org_live", stage: "listening", at: ago(6 * DAY) },
  ]);
}

describe("control-plane retention", () => {
  it("deletes exactly what is old and finished, and keeps the rest and every org and workspace", async () => {
    await seed();
    const { db } = cp.deps;
    const orgsBefore = await db.select().from(cpOrgs).orderBy(asc(cpOrgs.id));
    const retention = createCpRetention(cp.deps, settings);

    // Another replica is pruning: this one skips its pass and deletes nothing.
    const held = await cp.deps.advisoryLock(CP_RETENTION_LOCK, () => retention.sweep());
    expect(held).toEqual({ acquired: true, value: null });
    expect(await db.$count(cpOperations)).toBe(6);

    expect(await retention.sweep()).toEqual({
      operations: 3,
      reconcileRuns: 0,
      backupRecords: 0,
      nonces: 1,
      bootEvents: 1,
    });
    const kept = await db.select({ id: cpOperations.id }).from(cpOperations).orderBy(asc(cpOperations.id));
    expect(kept.map((row) => row.id)).toEqual(["op_old_pending", "op_old_running", "op_recent"]);
    const nonces = await db.select({ nonce: cpRequestNonces.nonce }).from(cpRequestNonces);
    expect(nonces).toEqual([{ nonce: "in-window" }]);
    const events = await db.select({ stage: cpBootEvents.stage }).from(cpBootEvents);
    expect(events).toEqual([{ stage: "listening" }]);
    expect(await db.select().from(cpOrgs).orderBy(asc(cpOrgs.id))).toEqual(orgsBefore);
    expect(await db.$count(cpWorkspaces)).toBe(1);

    expect(await retention.sweep()).toEqual({
      operations: 0,
      reconcileRuns: 0,
      backupRecords: 0,
      nonces: 0,
      bootEvents: 0,
    });
  });
});

describe("control-plane retention of backup reports", () => {
  it("deletes reports past the retention but keeps, per org, the newest and the newest good one", async () => {
    const { db } = cp.deps;
    const report = (orgId: string, location: string, outcome: "succeeded" | "failed", ageMs: number) => ({
      orgId,
      location,
      outcome,
      format: "pg_dump_custom" as const,
      startedAt: ago(ageMs + 60_000),
      finishedAt: ago(ageMs),
    });
    await db.insert(cpTenantBackups).values([
      report("org_live", "live-old-good", "succeeded", 200 * DAY),
      report("org_live", "live-newest-good", "succeeded", 150 * DAY),
      report("org_live", "live-old-failed", "failed", 120 * DAY),
      report("org_live", "live-newest", "failed", 100 * DAY),
      report("org_live", "live-recent", "failed", 89 * DAY),
      // Another org's reports are weighed on their own: its only (old) report stays.
      report("org_gone", "gone-only", "failed", 300 * DAY),
    ]);
    const retention = createCpRetention(cp.deps, settings);
    // live-recent is inside the retention, so the newest is it; the newest good one is live-newest-good.
    expect((await retention.sweep())?.backupRecords).toBe(3);
    const kept = await db
      .select({ location: cpTenantBackups.location })
      .from(cpTenantBackups)
      .orderBy(asc(cpTenantBackups.location));
    expect(kept.map((row) => row.location)).toEqual(["gone-only", "live-newest-good", "live-recent"]);
    const backups = await cp.admin("GET", "/cp/admin/backups");
    expect(backups.status).toBe(200);
    expect(JSON.stringify(backups.body)).toContain("live-newest-good");
    expect((await retention.sweep())?.backupRecords).toBe(0);
  });
});

import { AdminStats, ReconcileReport } from "@molecule/contracts";
import { createDatabase, type Database } from "@molecule/db";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { TENANT_RECONCILE_LOCK } from "./services/reconcile.ts";

let platform: TestPlatform;
let fake: FakeProvisioner;

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake);
});
afterAll(() => platform.close());

async function onlineWorkspace(name: string): Promise<string> {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  await platform.runner.drain();
  const id: string = created.body.workspace.id;
  const boot = fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN;
  const token: string = (await platform.call("POST", "/registry/register", { token: boot, body: { id } }))
    .body.auth_token;
  await platform.call("POST", "/registry/heartbeat", { token, body: { workspace_id: id } });
  return id;
}

const workspace = async (id: string) => (await platform.call("GET", `/workspaces/${id}`)).body;

describe("the tenant platform's reconciler", () => {
  it("a workspace shown online whose instance vanished becomes failed with the reason; its volume is still claimed", async () => {
    const id = await onlineWorkspace("vanishing");
    expect((await workspace(id)).status).toBe("online");
    fake.simulateInstanceLoss(id);

    const reconciled = await platform.call("POST", "/admin/reconcile");
    expect(reconciled.status).toBe(200);
    const report = ReconcileReport.parse(reconciled.body);
    expect(report.ghosts).toBe(1);
    expect(report.ghostList[0]).toMatchObject({ id, status: "online", action: "marked_failed" });
    expect(report.orphans).toBe(0);
    const after = await workspace(id);
    expect(after.status).toBe("failed");
    expect(after.status_reason ?? after.statusReason).toContain("the reconciler found no fake");
  });

  it("a listing that fails is reported and judges nothing: no workspace changes", async () => {
    const id = await onlineWorkspace("steady");
    fake.failNext("listManaged");
    const reconciled = await platform.call("POST", "/admin/reconcile");
    expect(reconciled.status).toBe(200);
    expect(reconciled.body).toMatchObject({ orphans: 0, ghosts: 0 });
    expect(reconciled.body.errors).toEqual([
      { backend: "fake", message: expect.stringContaining("injected failure") },
    ]);
    expect((await workspace(id)).status).toBe("online");
  });

  it("answers 409 with the error envelope while another replica holds the reconcile lock", async () => {
    const other: Database = await createDatabase({ url: platform.database.url, maxConnections: 1 });
    try {
      let release: () => void = () => {};
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      let locked: () => void = () => {};
      const taken = new Promise<void>((resolve) => {
        locked = resolve;
      });
      const holder = other.withAdvisoryLock(TENANT_RECONCILE_LOCK, async () => {
        locked();
        await held;
      });
      await taken;
      const refused = await platform.call("POST", "/admin/reconcile");
      expect(refused.status).toBe(409);
      expect(refused.body.error.code).toBe("conflict");
      expect(typeof refused.body.error.requestId).toBe("string");
      release();
      expect((await holder).acquired).toBe(true);
      expect((await platform.call("POST", "/admin/reconcile")).status).toBe(200);
    } finally {
      await other.close();
    }
  });

  it("stats: orphans and ghosts of the last pass, operations by kind and status, nothing running", async () => {
    const stats = await platform.call("GET", "/admin/stats");
    expect(stats.status).toBe(200);
    const body = AdminStats.parse(stats.body);
    expect(body.lastReconcile).not.toBeNull();
    expect(body.operations.provision?.succeeded).toBe(2);
    expect(body.oldestRunning).toBeNull();
    expect(body.hung).toBe(0);
    expect(body.resources.byBackend.fake).toBeGreaterThan(0);
  });
});

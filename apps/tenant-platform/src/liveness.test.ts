import { createDatabase } from "@molecule/db";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { TENANT_LIVENESS_LOCK } from "./services/liveness.ts";

let platform: TestPlatform;
let fake: FakeProvisioner;

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake, { staleAfterMs: 90_000 });
});
afterAll(() => platform.close());

async function onlineWorkspace(name: string) {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  await platform.runner.drain();
  const id: string = created.body.workspace.id;
  const boot = fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN;
  const token: string = (await platform.call("POST", "/registry/register", { token: boot, body: { id } }))
    .body.auth_token;
  const heartbeat = () => platform.call("POST", "/registry/heartbeat", { token, body: { workspace_id: id } });
  await heartbeat();
  return { id, heartbeat };
}

const statusOf = async (id: string) => (await platform.call("GET", `/workspaces/${id}`)).body;

describe("liveness", () => {
  it("silence beyond HEARTBEAT_STALE_AFTER moves online to offline; the next heartbeat brings it back", async () => {
    const { id, heartbeat } = await onlineWorkspace("quiet");
    await platform.sweeper.sweep();
    expect((await statusOf(id)).status).toBe("online");
    platform.clock.advance(91_000);
    await platform.sweeper.sweep();
    const offline = await statusOf(id);
    expect(offline.status).toBe("offline");
    expect(offline.statusReason).toContain("no heartbeat");
    await heartbeat();
    expect((await statusOf(id)).status).toBe("online");
  });

  it("another replica holding the sweep's lock makes this one skip the round, and touch nothing", async () => {
    const { id } = await onlineWorkspace("two-replicas");
    platform.clock.advance(91_000);
    const otherReplica = await createDatabase({ url: platform.database.url, maxConnections: 1 });
    try {
      const held = await otherReplica.withAdvisoryLock(TENANT_LIVENESS_LOCK, async () => {
        expect(await platform.sweeper.sweep()).toBe(false);
        expect(await platform.sweeper.markStale()).toBe(0);
        return (await statusOf(id)).status;
      });
      expect(held).toEqual({ acquired: true, value: "online" });
    } finally {
      await otherReplica.close();
    }
    expect(await platform.sweeper.sweep()).toBe(true);
    expect((await statusOf(id)).status).toBe("offline");
  });

  it("a process that died is noticed by the status sweep", async () => {
    const { id } = await onlineWorkspace("crashy");
    fake.simulateExit(id, 137);
    await platform.sweeper.sweep();
    const workspace = await statusOf(id);
    expect(workspace.status).toBe("offline");
    expect(workspace.statusReason).toContain("exited");
  });

  it("a process that vanished is noticed and can be restarted", async () => {
    const { id } = await onlineWorkspace("vanished");
    fake.simulateInstanceLoss(id);
    await platform.sweeper.sweep();
    expect((await statusOf(id)).statusReason).toContain("gone");
    const restart = await platform.call("POST", `/workspaces/${id}/restart`);
    expect(restart.status).toBe(202);
    await platform.runner.drain();
    expect((await statusOf(id)).status).toBe("awaiting_agent");
    expect(fake.inspect(id)?.instance?.state).toBe("running");
  });

  it("an agent reporting degraded is shown degraded with its detail", async () => {
    const { id } = await onlineWorkspace("sick");
    const token = (await platform.call("POST", "/registry/register", { body: { id } })).body.auth_token;
    await platform.call("POST", "/registry/heartbeat", {
      token,
      body: { workspace_id: id, status: "degraded", detail: "model quota exhausted" },
    });
    const workspace = await statusOf(id);
    expect(workspace.status).toBe("degraded");
    expect(workspace.statusReason).toBe("model quota exhausted");
  });

  it("stopped workspaces are not marked offline by the sweep", async () => {
    const { id } = await onlineWorkspace("resting");
    await platform.call("POST", `/workspaces/${id}/stop`);
    await platform.runner.drain();
    platform.clock.advance(200_000);
    await platform.sweeper.sweep();
    expect((await statusOf(id)).status).toBe("stopped");
  });
});

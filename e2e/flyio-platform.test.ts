import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type FlyHarness,
  startFlyHarness,
  TEST_APP,
  TEST_DEPLOYMENT,
} from "../packages/provisioner-core/src/flyio/testkit.ts";
import { createTestPlatform, type TestPlatform } from "../test-support/platform.ts";
import { waitFor } from "../test-support/wait.ts";

let fly: FlyHarness;
let platform: TestPlatform;

beforeAll(async () => {
  fly = await startFlyHarness();
  platform = await createTestPlatform(fly.provisioner, { deployment: TEST_DEPLOYMENT });
  await platform.listen();
});
afterAll(async () => {
  await platform.close();
  await fly.close();
});

const statusBecomes = (id: string, status: string) =>
  waitFor(`workspace ${id} to be ${status}`, async () => {
    const workspace = (await platform.call("GET", `/workspaces/${id}`)).body;
    return workspace.status === status ? workspace : undefined;
  });

describe("the tenant platform with CONTAINER_BACKEND=flyio, against the Fly emulator", () => {
  it("creates a machine and volume, the agent registers, stop/start, delete leaves nothing", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "on-fly", runtime: "echo", tier: 2, secrets: { FLY_SIDE: "v" } },
    });
    expect(created.status).toBe(202);
    const id: string = created.body.workspace.id;
    const waiting = await statusBecomes(id, "awaiting_agent");
    expect(waiting.backend).toBe("flyio");

    const machines = fly.emulator.machines(TEST_APP).filter((m) => m.state !== "destroyed");
    expect(machines).toHaveLength(1);
    const env = (machines[0]?.config.env ?? {}) as Record<string, string>;
    expect(env.WORKSPACE_ID).toBe(id);
    expect(env.FLY_SIDE).toBe("v");
    expect(fly.emulator.volumes(TEST_APP)).toHaveLength(1);

    // The agent would run inside the machine; here the test plays it with the injected boot token.
    const registered = await platform.call("POST", "/registry/register", {
      token: env.WORKSPACE_BOOT_TOKEN,
      body: { id },
    });
    expect(registered.status).toBe(200);
    await platform.call("POST", "/registry/heartbeat", {
      token: registered.body.auth_token,
      body: { workspace_id: id },
    });
    expect((await platform.call("GET", `/workspaces/${id}`)).body.status).toBe("online");

    await platform.call("POST", `/workspaces/${id}/stop`);
    await statusBecomes(id, "stopped");
    expect(fly.emulator.machines(TEST_APP).find((m) => m.id === machines[0]?.id)?.state).toBe("stopped");
    await platform.call("POST", `/workspaces/${id}/start`);
    await statusBecomes(id, "awaiting_agent");

    // A changed secret reaches the machine on restart: it is rebuilt on the same volume.
    await platform.call("PUT", `/workspaces/${id}/secrets/FLY_SIDE`, { body: { value: "rotated" } });
    await platform.call("POST", `/workspaces/${id}/restart`);
    await statusBecomes(id, "awaiting_agent");
    const live = fly.emulator.machines(TEST_APP).filter((m) => m.state !== "destroyed");
    expect(live).toHaveLength(1);
    expect((live[0]?.config.env as Record<string, string>).FLY_SIDE).toBe("rotated");
    expect(fly.emulator.volumes(TEST_APP)).toHaveLength(1);

    await platform.call("DELETE", `/workspaces/${id}`);
    await statusBecomes(id, "removed");
    expect(fly.emulator.machines(TEST_APP).filter((m) => m.state !== "destroyed")).toHaveLength(0);
    expect(fly.emulator.volumes(TEST_APP)).toHaveLength(0);
    expect(fly.emulator.violations).toEqual([]);
  });
});

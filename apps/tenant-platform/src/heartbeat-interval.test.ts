/**
 * With `HEARTBEAT_STALE_AFTER` below 30 s, agents must heartbeat more often than the SDK's 30 s default or healthy
 * workspaces flap offline. The platform derives the interval (a third of the threshold) and tells every agent: managed
 * workspaces in `HEARTBEAT_INTERVAL_SECONDS`, external ones in the connection bundle, all of them in the register and
 * heartbeat answers. The agent's waits are injected, so nothing here waits for real time.
 */
import { loadEchoConfig, runAgent } from "@molecule/agent-sdk";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";

let platform: TestPlatform;
let fake: FakeProvisioner;
let base: string;

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake, { staleAfterMs: 9_000 });
  base = await platform.listen();
});
afterAll(() => platform.close());

async function until(check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("heartbeat interval from HEARTBEAT_STALE_AFTER = 9 s", () => {
  it("a managed workspace is told 3 s, and the reference agent heartbeats every 3 s", async () => {
    const created = await platform.call("POST", "/workspaces", { body: { name: "quick", runtime: "echo" } });
    const id: string = created.body.workspace.id;
    await until(
      async () =>
        (await platform.call("GET", `/operations/${created.body.operation.id}`)).body.status === "succeeded",
    );
    const env = fake.inspect(id)?.instance?.env ?? {};
    expect(env.HEARTBEAT_INTERVAL_SECONDS).toBe("3");

    // The workspace image's own configuration, read from what the platform injected.
    const config = loadEchoConfig(env);
    expect(config.heartbeatIntervalMs).toBe(3_000);

    const controller = new AbortController();
    const waits: number[] = [];
    const stop = await runAgent({
      ...config,
      port: 0,
      host: "127.0.0.1",
      publicUrl: null,
      stateDir: null,
      card: { name: "quick" },
      onMessage: () => ({ parts: [] }),
      signal: controller.signal,
      sleep: async (ms) => {
        waits.push(ms);
        if (waits.length === 3) controller.abort();
      },
    });
    expect(stop).toEqual({ reason: "signal" });
    expect(waits).toEqual([3_000, 3_000, 3_000]);
    const shown = await platform.call("GET", `/workspaces/${id}`);
    expect(shown.body.status).toBe("online");
    expect(shown.body.lastHeartbeatAt).not.toBeNull();
  });

  it("an agent configured for 30 s still heartbeats every 3 s: the answers ask for it", async () => {
    const created = await platform.call("POST", "/workspaces", { body: { name: "slow", runtime: "echo" } });
    const id: string = created.body.workspace.id;
    await until(
      async () =>
        (await platform.call("GET", `/operations/${created.body.operation.id}`)).body.status === "succeeded",
    );
    const env = fake.inspect(id)?.instance?.env ?? {};
    const controller = new AbortController();
    const waits: number[] = [];
    await runAgent({
      platformUrl: base,
      workspaceId: id,
      bootToken: env.WORKSPACE_BOOT_TOKEN,
      heartbeatIntervalMs: 30_000,
      port: 0,
      host: "127.0.0.1",
      publicUrl: null,
      stateDir: null,
      card: { name: "slow" },
      onMessage: () => ({ parts: [] }),
      signal: controller.signal,
      sleep: async (ms) => {
        waits.push(ms);
        if (waits.length === 2) controller.abort();
      },
    });
    expect(waits).toEqual([3_000, 3_000]);
  });

  it("register and heartbeat answers and an external workspace's bundle say 3 s", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "remote", external: true, url: "http://127.0.0.1:9/" },
    });
    expect(created.body.connection.heartbeat_interval_seconds).toBe(3);
    const id: string = created.body.workspace.id;
    const registered = await platform.call("POST", "/registry/register", {
      token: created.body.connection.registration_token,
      body: { id },
    });
    expect(registered.body).toMatchObject({ workspace_id: id, heartbeat_interval_seconds: 3 });
    const beat = await platform.call("POST", "/registry/heartbeat", {
      token: registered.body.auth_token,
      body: { workspace_id: id },
    });
    expect(beat.body).toEqual({ ok: true, status: "online", heartbeat_interval_seconds: 3 });
  });
});

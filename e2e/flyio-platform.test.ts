import { type InboundAuth, messageText, startA2AServer } from "@molecule/agent-sdk";
import { workspaces } from "@molecule/db";
import { loadConfig } from "@molecule/tenant-platform/config";
import { eq } from "drizzle-orm";
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

describe("a flyio-mode platform (strict agent URL policy) and the machine's private-network address", () => {
  it("accepts a register of exactly the assigned address, refuses loopback and every other private URL, and reaches it by A2A", async () => {
    let inbound: InboundAuth = "pending";
    const agent = await startA2AServer({
      host: "127.0.0.1",
      port: 0,
      card: { name: "on-fly", description: "echoes", skills: [] },
      inbound: () => inbound,
      onMessage: async (message) => ({ parts: [{ kind: "text", text: `fly: ${messageText(message)}` }] }),
    });
    // What loadConfig gives CONTAINER_BACKEND=flyio: https only, no private addresses.
    const policy = loadConfig({
      CONTAINER_BACKEND: "flyio",
      FLY_API_TOKEN: "t",
      FLY_WORKSPACE_APP: TEST_APP,
    }).agentUrls;
    const strict = await createTestPlatform(
      fly.provisioner,
      {
        deployment: TEST_DEPLOYMENT,
        allowInsecureAgentUrls: policy.allowInsecure,
        allowPrivateAgentUrls: policy.allowPrivate,
        // The test's agent listens on a free loopback port; Fly machines listen on 8000 unless told otherwise.
        workspaceEnv: { AGENT_PORT: String(agent.port) },
      },
      {
        // Fly's private DNS, played on loopback: only this app's machine names resolve, to the test's agent.
        resolveAgentHost: async (host) => {
          if (host.endsWith(`.vm.${TEST_APP}.internal`)) return [{ address: "127.0.0.1", family: 4 }];
          throw Object.assign(new Error(`ENOTFOUND ${host}`), { code: "ENOTFOUND" });
        },
      },
    );
    try {
      await strict.listen();
      const created = await strict.call("POST", "/workspaces", {
        body: { name: "private", runtime: "echo" },
      });
      expect(created.status).toBe(202);
      const id: string = created.body.workspace.id;
      await waitFor(`workspace ${id} to await its agent`, async () => {
        const { body } = await strict.call("GET", `/workspaces/${id}`);
        return body.status === "awaiting_agent" ? body : undefined;
      });

      const machine = fly.emulator
        .machines(TEST_APP)
        .find((m) => (m.config.env as Record<string, string>).WORKSPACE_ID === id);
      const assigned = `http://${machine?.id}.vm.${TEST_APP}.internal:${agent.port}`;
      const env = (machine?.config.env ?? {}) as Record<string, string>;
      expect(env.AGENT_PUBLIC_URL).toBe(assigned);
      const [row] = await strict.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
      expect(row?.handle?.agentUrl).toBe(assigned);

      const register = (url: string) =>
        strict.call("POST", "/registry/register", { token: env.WORKSPACE_BOOT_TOKEN, body: { id, url } });
      for (const url of [
        "http://127.0.0.1:8000",
        `http://127.0.0.1:${agent.port}`,
        `http://10.1.2.3:${agent.port}`,
        `http://[fdaa:0:1:a7b::2]:${agent.port}`,
        `http://ffffffffffffff.vm.${TEST_APP}.internal:${agent.port}`,
        `http://${machine?.id}.vm.${TEST_APP}.internal:${agent.port + 1}`,
        `http://${machine?.id}.vm.other-app.internal:${agent.port}`,
      ]) {
        const refused = await register(url);
        expect(refused.status, url).toBe(400);
      }
      // The refusals spent nothing: the same boot token registers the assigned address.
      const registered = await register(assigned);
      expect(registered.status, JSON.stringify(registered.body)).toBe(200);
      inbound = { token: registered.body.inbound_token };
      await strict.call("POST", "/registry/heartbeat", {
        token: registered.body.auth_token,
        body: { workspace_id: id },
      });

      const reply = await strict.call("POST", `/workspaces/${id}/a2a`, {
        body: {
          jsonrpc: "2.0",
          id: 1,
          method: "message/send",
          params: { message: { role: "user", messageId: "m-1", parts: [{ kind: "text", text: "6pn" }] } },
        },
      });
      expect(reply.status, JSON.stringify(reply.body)).toBe(200);
      expect(JSON.stringify(reply.body)).toContain("fly: 6pn");

      await strict.call("DELETE", `/workspaces/${id}`);
      await waitFor(`workspace ${id} to be removed`, async () => {
        const { body } = await strict.call("GET", `/workspaces/${id}`);
        return body.status === "removed" ? body : undefined;
      });
      expect(fly.emulator.violations).toEqual([]);
    } finally {
      await strict.close();
      await agent.close();
    }
  });
});

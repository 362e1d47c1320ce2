import type { Handle, ProvisionContext, Provisioner, WorkspaceSpec } from "@molecule/provisioner-core";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";

/**
 * An agent can boot, register and heartbeat before the backend call that started it has returned (a slow API
 * answer, a poll interval). That heartbeat must count: the workspace is online, not left awaiting the next one.
 */
let platform: TestPlatform;
const fake = createFakeProvisioner();

/** The fake, except that the workspace's agent comes up and heartbeats inside the provision/start call. */
const agentUpBeforeReturn: Provisioner = {
  ...fake,
  name: fake.name,
  capabilities: () => fake.capabilities(),
  status: (ref) => fake.status(ref),
  stop: (ref, ctx) => fake.stop(ref, ctx),
  destroy: (ref, ctx) => fake.destroy(ref, ctx),
  async provision(spec: WorkspaceSpec, handle: Handle | null, ctx?: ProvisionContext) {
    const made = await fake.provision(spec, handle, ctx);
    await agentBoots(spec);
    return made;
  },
  async start(spec: WorkspaceSpec, handle: Handle | null, ctx?: ProvisionContext) {
    const made = await fake.start(spec, handle, ctx);
    await agentBoots(spec);
    return made;
  },
};

async function agentBoots(spec: WorkspaceSpec) {
  const registered = await platform.call("POST", "/registry/register", {
    token: spec.env.WORKSPACE_BOOT_TOKEN,
    body: { id: spec.workspaceId, url: "http://127.0.0.1:1/" },
  });
  expect(registered.status).toBe(200);
  const beat = await platform.call("POST", "/registry/heartbeat", {
    token: registered.body.auth_token,
    body: { workspace_id: spec.workspaceId },
  });
  expect(beat.status).toBe(200);
}

beforeAll(async () => {
  platform = await createTestPlatform(agentUpBeforeReturn);
});
afterAll(() => platform.close());

async function workspace(id: string) {
  return (await platform.call("GET", `/workspaces/${id}`)).body;
}

describe("a heartbeat that arrives while the workspace is still provisioning", () => {
  it("moves it online, and the finishing provision or restart leaves it online", async () => {
    const created = await platform.call("POST", "/workspaces", { body: { name: "eager", runtime: "echo" } });
    expect(created.status).toBe(202);
    const id: string = created.body.workspace.id;
    await platform.runner.drain();
    expect(await workspace(id)).toMatchObject({ status: "online" });
    expect((await workspace(id)).lastHeartbeatAt).not.toBeNull();

    const restarted = await platform.call("POST", `/workspaces/${id}/restart`);
    expect(restarted.status).toBe(202);
    await platform.runner.drain();
    const after = await workspace(id);
    expect(after).toMatchObject({ status: "online" });
    // The heartbeat that counts is the new process's, sent during the restart.
    expect(after.lastHeartbeatAt).not.toBeNull();
    expect(new Date(after.lastHeartbeatAt).getTime()).toBeGreaterThanOrEqual(
      new Date(restarted.body.operation.createdAt).getTime(),
    );
  });
});

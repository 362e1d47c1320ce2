import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { waitFor } from "../../../test-support/wait.ts";

/**
 * A redeploy ends once its agent is online again. The agent's heartbeat that moves the workspace online wakes the
 * waiting operation at once: with a ten-minute poll, only that push can end it within the test.
 */
let platform: TestPlatform;

beforeAll(async () => {
  platform = await createTestPlatform(createFakeProvisioner(), { redeployOnlinePollMs: 600_000 });
  await platform.listen();
});
afterAll(() => platform.close());

async function workspace(id: string) {
  return (await platform.call("GET", `/workspaces/${id}`)).body;
}

describe("a redeploy waiting for its agent", () => {
  it("ends as soon as the agent's heartbeat moves the workspace online, not at the next poll", async () => {
    const created = await platform.call("POST", "/workspaces", { body: { name: "rolled", runtime: "echo" } });
    expect(created.status).toBe(202);
    const id: string = created.body.workspace.id;
    await waitFor("the workspace to await its agent", async () =>
      (await workspace(id)).status === "awaiting_agent" ? true : undefined,
    );
    // An operator registers the agent by hand (the admin token), and it heartbeats with its own token.
    const registered = await platform.call("POST", "/registry/register", {
      body: { id, url: "http://127.0.0.1:1/" },
    });
    expect(registered.status).toBe(200);
    const beat = () =>
      platform.call("POST", "/registry/heartbeat", {
        token: registered.body.auth_token,
        body: { workspace_id: id },
      });
    expect((await beat()).status).toBe(200);
    expect((await workspace(id)).status).toBe("online");

    const redeploy = await platform.call("POST", `/workspaces/${id}/redeploy`);
    expect(redeploy.status).toBe(202);
    const operationId: string = redeploy.body.operation.id;
    const operation = async () => (await platform.call("GET", `/operations/${operationId}`)).body;
    // Rebuilt: the workspace awaits its agent again, and the redeploy waits with it.
    await waitFor("the rebuilt workspace to await its agent", async () =>
      (await workspace(id)).status === "awaiting_agent" ? true : undefined,
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await operation()).status).toBe("running");

    expect((await beat()).status).toBe(200);
    const done = await waitFor(
      "the redeploy to succeed",
      async () => {
        const body = await operation();
        return body.finishedAt ? body : undefined;
      },
      10_000,
      20,
    );
    expect(done.status).toBe("succeeded");
    expect(done.steps.map((step: { name: string }) => step.name).at(-1)).toBe("agent_online");
  });
});

import { workspaces } from "@molecule/db";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { waitFor } from "../../../test-support/wait.ts";

/**
 * A redeploy ends once its agent is online again. The status change that says so wakes the waiting operation at
 * once, whether this process made it (the agent's heartbeat came here) or hears of it from another replica through
 * the database's change feed: with a ten-minute poll, only that push can end it within the test.
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

/** An online workspace with its agent's token, then a redeploy of it that is waiting for the agent again. */
async function redeployAwaitingAgent(name: string) {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  expect(created.status).toBe(202);
  const id: string = created.body.workspace.id;
  await waitFor("the workspace to await its agent", async () =>
    (await workspace(id)).status === "awaiting_agent" ? true : undefined,
  );
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
  const redeploy = await platform.call("POST", `/workspaces/${id}/redeploy`);
  expect(redeploy.status).toBe(202);
  const operationId: string = redeploy.body.operation.id;
  const operation = async () => (await platform.call("GET", `/operations/${operationId}`)).body;
  await waitFor("the rebuilt workspace to await its agent", async () =>
    (await workspace(id)).status === "awaiting_agent" ? true : undefined,
  );
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect((await operation()).status).toBe("running");
  const finished = () =>
    waitFor(
      "the redeploy to end",
      async () => {
        const body = await operation();
        return body.finishedAt ? body : undefined;
      },
      10_000,
      20,
    );
  return { id, beat, finished };
}

describe("a redeploy waiting for its agent", () => {
  it("ends as soon as another replica moves the workspace online and this one hears of it", async () => {
    const { id, finished } = await redeployAwaitingAgent("elsewhere");
    // The agent's heartbeat went to another replica: the row changes, this process's event bus says nothing, the
    // database's change feed tells it.
    await platform.deps.db.update(workspaces).set({ status: "online" }).where(eq(workspaces.id, id));
    const done = await finished();
    expect(done.status).toBe("succeeded");
    expect(done.steps.map((step: { name: string }) => step.name).at(-1)).toBe("agent_online");
  });

  it("ends as soon as the agent's heartbeat moves the workspace online, not at the next poll", async () => {
    const { beat, finished } = await redeployAwaitingAgent("here");
    expect((await beat()).status).toBe(200);
    const done = await finished();
    expect(done.status).toBe("succeeded");
    expect(done.steps.map((step: { name: string }) => step.name).at(-1)).toBe("agent_online");
  });
});

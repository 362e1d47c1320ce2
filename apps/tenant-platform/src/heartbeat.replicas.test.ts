import { hashToken } from "@molecule/identity";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { waitFor } from "../../../test-support/wait.ts";

/**
 * Two platform processes on one database, each with its own memory of tokens (services/heartbeats.ts) and its own
 * LISTEN connection: a token revoked through one is refused by the other once the change notification arrives
 * (waited for by polling), and the other's beats buffered before the revoke write nothing.
 */
let first: TestPlatform;
let second: TestPlatform;
let fake: FakeProvisioner;

beforeAll(async () => {
  fake = createFakeProvisioner();
  first = await createTestPlatform(fake);
  second = await createTestPlatform(fake, {}, { database: first.database });
});
afterAll(async () => {
  await second.close();
  await first.close();
});

const beat = (platform: TestPlatform, token: string, id: string) =>
  platform.call("POST", "/registry/heartbeat", { token, body: { workspace_id: id } });

const stored = async (id: string) => (await first.call("GET", `/workspaces/${id}`)).body;

/** Registered and online through the first process; the second answers its beats from memory. */
async function agentOnSecond(name: string): Promise<{ id: string; token: string }> {
  const created = await first.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  await first.runner.drain();
  const id: string = created.body.workspace.id;
  const boot = fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN;
  const token: string = (await first.call("POST", "/registry/register", { token: boot, body: { id } })).body
    .auth_token;
  expect((await beat(first, token, id)).body.status).toBe("online");
  await second.heartbeats.flush();
  expect((await beat(second, token, id)).status).toBe(200);
  expect(second.heartbeats.buffered).toBe(1);
  await second.heartbeats.flush();
  return { id, token };
}

/** A beat through the second process buffered there, later than anything written. */
async function bufferedOnSecond(agent: { id: string; token: string }): Promise<string> {
  const written = (await stored(agent.id)).lastHeartbeatAt;
  second.clock.advance(1_000);
  expect((await beat(second, agent.token, agent.id)).status).toBe(200);
  expect(second.heartbeats.buffered).toBe(1);
  return written;
}

describe("a token revoked through one process", () => {
  it("rotated by registering again: refused by the other once notified; its buffered beat writes nothing", async () => {
    const agent = await agentOnSecond("rotated");
    const written = await bufferedOnSecond(agent);

    const again = await first.call("POST", "/registry/register", { body: { id: agent.id } });
    expect(again.status).toBe(200);
    await waitFor("the second process to refuse the rotated token", async () =>
      (await beat(second, agent.token, agent.id)).status === 401 ? true : undefined,
    );
    await second.heartbeats.flush();
    expect((await stored(agent.id)).lastHeartbeatAt).toBe(written);
    expect((await beat(second, again.body.auth_token, agent.id)).status).toBe(200);
  });

  it("the workspace deleted: 404 from the other once notified, then 401; its buffered beat writes nothing", async () => {
    const agent = await agentOnSecond("deleted");
    const written = await bufferedOnSecond(agent);

    expect((await first.call("DELETE", `/workspaces/${agent.id}`)).status).toBe(202);
    // Polled without beating: a refused beat is itself written (as it always was), which would hide the batch's.
    await waitFor("the second process to forget the workspace being removed", async () =>
      second.heartbeats.vouchesFor(hashToken(agent.token)) ? undefined : true,
    );
    await second.heartbeats.flush();
    expect((await stored(agent.id)).lastHeartbeatAt).toBe(written);
    expect((await beat(second, agent.token, agent.id)).status).toBe(404);
    await first.runner.drain();
    await waitFor("the second process to refuse the removed workspace's token", async () =>
      (await beat(second, agent.token, agent.id)).status === 401 ? true : undefined,
    );
  });

  it("a workspace marked offline by the other process's sweep: the next beat brings it back online", async () => {
    const agent = await agentOnSecond("swept");
    first.clock.advance(200_000);
    await first.sweeper.markStale();
    expect((await stored(agent.id)).status).toBe("offline");
    await waitFor("the second process to bring the workspace back online", async () => {
      const answer = await beat(second, agent.token, agent.id);
      await second.heartbeats.flush();
      return answer.body.status === "online" && (await stored(agent.id)).status === "online"
        ? true
        : undefined;
    });
  });
});

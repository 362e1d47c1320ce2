import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";

/**
 * `POST /registry/heartbeat` checks its token in the statement that records the heartbeat; these pin down that it
 * answers as before (401 unknown or revoked, 403 another workspace's, 404 gone), writes nothing it should not, and
 * that a rotated or revoked token stops working at once.
 */
let platform: TestPlatform;
let fake: FakeProvisioner;

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake);
});
afterAll(() => platform.close());

/**
 * A workspace whose agent has registered: its id and bearer token. Registered by its agent (the boot token), the
 * registration counts as its first heartbeat; by the admin (`byAdmin`), it is still awaiting its first heartbeat.
 */
async function registered(name: string, byAdmin = false): Promise<{ id: string; token: string }> {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  await platform.runner.drain();
  const id: string = created.body.workspace.id;
  const boot = byAdmin ? undefined : fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN;
  const response = await platform.call("POST", "/registry/register", { token: boot, body: { id } });
  expect(response.status).toBe(200);
  return { id, token: response.body.auth_token };
}

const beat = (token: string | null, body: unknown) =>
  platform.call("POST", "/registry/heartbeat", { token, body });

async function lastHeartbeat(id: string): Promise<string | null> {
  return (await platform.call("GET", `/workspaces/${id}`)).body.lastHeartbeatAt;
}

describe("heartbeat credentials", () => {
  it("a workspace's own token records the heartbeat and moves it online", async () => {
    const agent = await registered("own", true);
    expect((await platform.call("GET", `/workspaces/${agent.id}`)).body.status).toBe("awaiting_agent");
    const before = platform.clock.now().getTime();
    const response = await beat(agent.token, { workspace_id: agent.id });
    const after = platform.clock.now().getTime();
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ ok: true, status: "online", heartbeat_interval_seconds: 30 });
    const at = Date.parse((await lastHeartbeat(agent.id)) ?? "");
    expect(at).toBeGreaterThanOrEqual(before);
    expect(at).toBeLessThanOrEqual(after);
  });

  it("401 without a token, with an unknown one, or with a boot token, before the body is judged", async () => {
    const agent = await registered("no-token", true);
    const boot = fake.inspect(agent.id)?.instance?.env.WORKSPACE_BOOT_TOKEN ?? "";
    for (const token of [null, "mwt_unknown", boot]) {
      for (const body of [{ workspace_id: agent.id }, { workspace_id: 42 }, "not json"]) {
        const response = await beat(token, body);
        expect(response.status, `${token} ${JSON.stringify(body)}`).toBe(401);
        expect(response.body.error.code).toBe("unauthorized");
      }
    }
    expect(await lastHeartbeat(agent.id)).toBeNull();
  });

  it("400 for a bad body sent with a valid token", async () => {
    const agent = await registered("bad-body");
    const response = await beat(agent.token, { workspace_id: 42 });
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe("bad_request");
  });

  it("403 for another workspace's id, and the other workspace is not touched", async () => {
    const agent = await registered("mine");
    const other = await registered("theirs", true);
    const response = await beat(agent.token, { workspace_id: other.id });
    expect(response.status).toBe(403);
    expect(response.body.error.code).toBe("forbidden");
    expect(await lastHeartbeat(other.id)).toBeNull();
    const missing = await beat(agent.token, { workspace_id: "ws_0000000000aaaaaaaaaaaaaaaa" });
    expect(missing.status).toBe(403);
  });

  it("the admin token heartbeats any workspace of the org; 404 for one that does not exist", async () => {
    const agent = await registered("by-admin");
    const response = await platform.call("POST", "/registry/heartbeat", { body: { workspace_id: agent.id } });
    expect(response.status).toBe(200);
    expect(response.body.status).toBe("online");
    const missing = await platform.call("POST", "/registry/heartbeat", {
      body: { workspace_id: "ws_0000000000aaaaaaaaaaaaaaaa" },
    });
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe("not_found");
  });
});

describe("revocation takes effect at once", () => {
  it("after registering again, the earlier token is refused on its next heartbeat and the new one works", async () => {
    const agent = await registered("rotated");
    expect((await beat(agent.token, { workspace_id: agent.id })).status).toBe(200);
    const again = await platform.call("POST", "/registry/register", { body: { id: agent.id } });
    expect(again.status).toBe(200);
    const old = await beat(agent.token, { workspace_id: agent.id });
    expect(old.status).toBe(401);
    expect((await beat(again.body.auth_token, { workspace_id: agent.id })).status).toBe(200);
    // The other routes that take a workspace token refuse it too.
    const values = await platform.call("GET", `/workspaces/${agent.id}/secrets/values`, {
      token: agent.token,
    });
    expect(values.status).toBe(401);
  });

  it("while a workspace is being removed its heartbeats get 404; once removed its token gets 401", async () => {
    const agent = await registered("deleted");
    expect((await beat(agent.token, { workspace_id: agent.id })).status).toBe(200);
    expect((await platform.call("DELETE", `/workspaces/${agent.id}`)).status).toBe(202);
    const removing = await beat(agent.token, { workspace_id: agent.id });
    expect(removing.status).toBe(404);
    expect(removing.body.error.message).toContain("was removed");
    await platform.runner.drain();
    expect((await platform.call("GET", `/workspaces/${agent.id}`)).body.status).toBe("removed");
    const removed = await beat(agent.token, { workspace_id: agent.id });
    expect(removed.status).toBe(401);
    expect(removed.body.error.code).toBe("unauthorized");
  });
});

describe("heartbeat log lines", () => {
  it("a successful heartbeat is logged at debug, a refused one at info", async () => {
    const agent = await registered("logged");
    const ok = await beat(agent.token, { workspace_id: agent.id });
    const refused = await beat("mwt_unknown", { workspace_id: agent.id });
    const line = (requestId: string | null) =>
      platform.logs
        .map((text) => JSON.parse(text))
        .find((entry) => entry.requestId === requestId && entry.msg === "request");
    expect(line(ok.headers.get("x-request-id"))).toMatchObject({
      level: 20,
      route: "/registry/heartbeat",
      status: 200,
    });
    expect(line(refused.headers.get("x-request-id"))).toMatchObject({ level: 30, status: 401 });
  });
});

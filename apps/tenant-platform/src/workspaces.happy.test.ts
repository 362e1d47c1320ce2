import { operations } from "@molecule/db";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";

let platform: TestPlatform;
let fake: FakeProvisioner;

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake);
});
afterAll(() => platform.close());

async function createOnline(name: string, secrets: Record<string, string> = {}) {
  const created = await platform.call("POST", "/workspaces", {
    body: { name, runtime: "echo", tier: 2, secrets },
  });
  expect(created.status).toBe(202);
  await platform.runner.drain();
  const id: string = created.body.workspace.id;
  const bootToken = fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN;
  const registered = await platform.call("POST", "/registry/register", {
    token: bootToken,
    body: { id, url: "http://127.0.0.1:1/", agent_card: { name } },
  });
  expect(registered.status).toBe(200);
  const authToken: string = registered.body.auth_token;
  const beat = await platform.call("POST", "/registry/heartbeat", {
    token: authToken,
    body: { workspace_id: id },
  });
  expect(beat.status).toBe(200);
  return { id, bootToken, authToken, created };
}

describe("workspace lifecycle through the API", () => {
  it("creates a workspace in the background and answers 202 with the operation", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: {
        name: "alpha",
        runtime: "echo",
        tier: 3,
        secrets: { API_KEY: "s3cr3t-value" },
        metadata: { team: "a" },
      },
    });
    expect(created.status).toBe(202);
    expect(created.body.workspace).toMatchObject({
      name: "alpha",
      status: "provisioning",
      tier: 3,
      backend: "fake",
    });
    expect(created.body.workspace.id).toMatch(/^ws_/);
    expect(created.body.operation).toMatchObject({ kind: "provision", status: "pending" });
    expect(JSON.stringify(created.body)).not.toContain("s3cr3t-value");

    await platform.runner.drain();
    const id = created.body.workspace.id;
    const env = fake.inspect(id)?.instance?.env ?? {};
    expect(env.WORKSPACE_ID).toBe(id);
    expect(env.PLATFORM_URL).toBe("http://127.0.0.1:9");
    expect(env.WORKSPACE_BOOT_TOKEN).toMatch(/^mbt_/);
    expect(env.API_KEY).toBe("s3cr3t-value");

    const workspace = await platform.call("GET", `/workspaces/${id}`);
    expect(workspace.body.status).toBe("awaiting_agent");
    const operation = await platform.call("GET", `/operations/${created.body.operation.id}`);
    expect(operation.body.status).toBe("succeeded");
    expect(operation.body.steps.map((step: { name: string }) => step.name)).toEqual([
      "image_ready",
      "volume_ready",
      "instance_created",
      "instance_started",
    ]);
    for (const step of operation.body.steps) expect(step.durationMs).toBeGreaterThanOrEqual(0);
  });

  it("registers with the one-time boot token, goes online on the first heartbeat", async () => {
    const { id, bootToken, authToken } = await createOnline("beta");
    expect(authToken).toMatch(/^mwt_/);
    expect((await platform.call("GET", `/workspaces/${id}`)).body.status).toBe("online");
    const again = await platform.call("POST", "/registry/register", { token: bootToken, body: { id } });
    expect(again.status).toBe(401);
    expect(again.body.error.code).toBe("unauthorized");
  });

  it("reads a register or heartbeat body sent without a JSON content type", async () => {
    const { id, authToken } = await createOnline("curl");
    const response = await platform.app.request("/registry/heartbeat", {
      method: "POST",
      headers: { authorization: `Bearer ${authToken}`, "content-type": "application/x-www-form-urlencoded" },
      body: JSON.stringify({ workspace_id: id }),
    });
    expect(response.status).toBe(200);
  });

  it("stops, starts and restarts, recording each operation", async () => {
    const { id, authToken } = await createOnline("gamma");
    const stop = await platform.call("POST", `/workspaces/${id}/stop`);
    expect(stop.status).toBe(202);
    expect(stop.body.workspace.status).toBe("stopping");
    await platform.runner.drain();
    expect((await platform.call("GET", `/workspaces/${id}`)).body.status).toBe("stopped");
    expect(fake.inspect(id)?.instance?.state).toBe("stopped");

    const start = await platform.call("POST", `/workspaces/${id}/start`);
    expect(start.status).toBe(202);
    await platform.runner.drain();
    expect((await platform.call("GET", `/workspaces/${id}`)).body.status).toBe("awaiting_agent");
    expect(fake.inspect(id)?.instance?.state).toBe("running");

    // The agent kept its bearer token across the restart: its next heartbeat brings it online.
    await platform.call("POST", "/registry/heartbeat", { token: authToken, body: { workspace_id: id } });
    expect((await platform.call("GET", `/workspaces/${id}`)).body.status).toBe("online");

    const restart = await platform.call("POST", `/workspaces/${id}/restart`);
    expect(restart.status).toBe(202);
    await platform.runner.drain();
    const operation = await platform.call("GET", `/operations/${restart.body.operation.id}`);
    expect(operation.body.status).toBe("succeeded");
    expect((await platform.call("GET", `/workspaces/${id}`)).body.status).toBe("awaiting_agent");
    const history = await platform.call("GET", `/workspaces/${id}/operations`);
    expect(history.body.operations.map((op: { kind: string }) => op.kind)).toEqual([
      "restart",
      "start",
      "stop",
      "provision",
    ]);
  });

  it("accepts the next request once the workspace has reached its end status, even before the operation has written its finish", async () => {
    const { id } = await createOnline("delta");
    const stop = await platform.call("POST", `/workspaces/${id}/stop`);
    await platform.runner.drain();
    expect((await platform.call("GET", `/workspaces/${id}`)).body.status).toBe("stopped");
    // The moment between the stop's last transition and its own finish, as a client watching events can hit it.
    await platform.database.db
      .update(operations)
      .set({ status: "running", finishedAt: null })
      .where(eq(operations.id, stop.body.operation.id));

    const start = await platform.call("POST", `/workspaces/${id}/start`);
    expect(start.status).toBe(202);
    // A second lifecycle request while that start is queued is still refused by the status it set.
    const again = await platform.call("POST", `/workspaces/${id}/start`);
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe("invalid_transition");

    await platform.database.db
      .update(operations)
      .set({ status: "succeeded", finishedAt: new Date() })
      .where(eq(operations.id, stop.body.operation.id));
    await platform.runner.drain();
    expect((await platform.call("GET", `/operations/${start.body.operation.id}`)).body.status).toBe(
      "succeeded",
    );
    expect((await platform.call("GET", `/workspaces/${id}`)).body.status).toBe("awaiting_agent");
    expect(fake.inspect(id)?.instance?.state).toBe("running");
  });

  it("deletes: the backend resources, tokens and secrets go, the row stays as removed", async () => {
    const { id, authToken } = await createOnline("delta", { TOKEN: "x" });
    const removed = await platform.call("DELETE", `/workspaces/${id}`);
    expect(removed.status).toBe(202);
    expect(removed.body.workspace.status).toBe("removing");
    await platform.runner.drain();
    expect(fake.inspect(id)).toBeUndefined();
    const after = await platform.call("GET", `/workspaces/${id}`);
    expect(after.body.status).toBe("removed");
    const list = await platform.call("GET", "/workspaces");
    expect(list.body.workspaces.map((w: { id: string }) => w.id)).not.toContain(id);
    const beat = await platform.call("POST", "/registry/heartbeat", {
      token: authToken,
      body: { workspace_id: id },
    });
    expect(beat.status).toBe(401);
    // Deleting again is not an error: it answers with the delete that already ran.
    const again = await platform.call("DELETE", `/workspaces/${id}`);
    expect(again.status).toBe(202);
    expect(again.body.operation.id).toBe(removed.body.operation.id);
  });

  it("a delete during provisioning waits for it, then removes everything", async () => {
    const created = await platform.call("POST", "/workspaces", { body: { name: "eps", runtime: "echo" } });
    const id = created.body.workspace.id;
    const removed = await platform.call("DELETE", `/workspaces/${id}`);
    expect(removed.status).toBe(202);
    await platform.runner.drain();
    expect(fake.inspect(id)).toBeUndefined();
    expect((await platform.call("GET", `/workspaces/${id}`)).body.status).toBe("removed");
    const provision = await platform.call("GET", `/operations/${created.body.operation.id}`);
    expect(provision.body.error.code).toBe("superseded");
  });

  it("carries the workspace's fields at the top level of every workspace answer, and under workspace too", async () => {
    const headers = { "idempotency-key": "create-top-level-1" };
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "top-level", runtime: "echo" },
      headers,
    });
    const { workspace, operation, ...top } = created.body;
    expect(top).toEqual(workspace);
    expect(created.body.id).toMatch(/^ws_/);
    expect(operation.kind).toBe("provision");
    const replayed = await platform.call("POST", "/workspaces", {
      body: { name: "top-level", runtime: "echo" },
      headers,
    });
    expect(replayed.body.id).toBe(created.body.id);
    expect(replayed.body.workspace.id).toBe(created.body.id);
    await platform.runner.drain();

    const got = await platform.call("GET", `/workspaces/${created.body.id}`);
    expect(got.body).toMatchObject({ id: created.body.id, name: "top-level" });
    const listed = await platform.call("GET", "/workspaces");
    expect(listed.body.workspaces.find((w: { id: string }) => w.id === created.body.id)).toEqual(got.body);

    for (const [method, path] of [
      ["POST", `/workspaces/${created.body.id}/stop`],
      ["DELETE", `/workspaces/${created.body.id}`],
    ] as const) {
      const answer = await platform.call(method, path);
      expect(answer.status).toBe(202);
      const { workspace: nested, operation: queued, ...fields } = answer.body;
      expect(fields).toEqual(nested);
      expect(fields.id).toBe(created.body.id);
      expect(queued.workspaceId).toBe(created.body.id);
      await platform.runner.drain();
    }
  });

  it("same Idempotency-Key and body give the same workspace; a different body is refused", async () => {
    const headers = { "idempotency-key": "create-zeta-1" };
    const body = { name: "zeta", runtime: "echo", tier: 2 };
    const [first, second] = await Promise.all([
      platform.call("POST", "/workspaces", { body, headers }),
      platform.call("POST", "/workspaces", { body, headers }),
    ]);
    expect(first.status).toBe(202);
    expect(second.status).toBe(202);
    expect(second.body.workspace.id).toBe(first.body.workspace.id);
    const third = await platform.call("POST", "/workspaces", { body, headers });
    expect(third.body.workspace.id).toBe(first.body.workspace.id);
    const named = (await platform.call("GET", "/workspaces")).body.workspaces.filter(
      (w: { name: string }) => w.name === "zeta",
    );
    expect(named).toHaveLength(1);
    const different = await platform.call("POST", "/workspaces", { body: { ...body, tier: 3 }, headers });
    expect(different.status).toBe(409);
    expect(different.body.error.code).toBe("idempotency_key_reused");
  });

  it("secrets: keys listed without values, values only to the workspace, a change marks needs_restart", async () => {
    const { id, authToken } = await createOnline("eta", { FIRST: "one" });
    const put = await platform.call("PUT", `/workspaces/${id}/secrets/SECOND`, { body: { value: "two" } });
    expect(put.status).toBe(200);
    expect(put.body).toEqual({ key: "SECOND", needsRestart: true });
    const keys = await platform.call("GET", `/workspaces/${id}/secrets`);
    expect(keys.body.secrets.map((s: { key: string }) => s.key)).toEqual(["FIRST", "SECOND"]);
    expect(JSON.stringify(keys.body)).not.toContain("two");
    const values = await platform.call("GET", `/workspaces/${id}/secrets/values`, { token: authToken });
    expect(values.body.secrets).toEqual({ FIRST: "one", SECOND: "two" });
    expect((await platform.call("GET", `/workspaces/${id}`)).body.needsRestart).toBe(true);
    const del = await platform.call("DELETE", `/workspaces/${id}/secrets/FIRST`);
    expect(del.status).toBe(200);
    expect((await platform.call("DELETE", `/workspaces/${id}/secrets/FIRST`)).status).toBe(404);

    await platform.call("POST", `/workspaces/${id}/restart`);
    await platform.runner.drain();
    expect((await platform.call("GET", `/workspaces/${id}`)).body.needsRestart).toBe(false);
    expect(fake.inspect(id)?.instance?.env.SECOND).toBe("two");
    expect(fake.inspect(id)?.instance?.env.FIRST).toBeUndefined();
  });

  it("never writes a secret value or token to the log", async () => {
    const { bootToken, authToken } = await createOnline("theta", { LEAKY: "do-not-log-me-123" });
    const logs = platform.logs.join("");
    expect(logs.length).toBeGreaterThan(0);
    expect(logs).not.toContain("do-not-log-me-123");
    expect(logs).not.toContain(String(bootToken));
    expect(logs).not.toContain(authToken);
    expect(logs).not.toContain("test-admin-token");
  });
});

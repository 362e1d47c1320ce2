import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";

/**
 * As served, `POST /registry/heartbeat` is a raw route in front of the Hono app (routes/registry.ts
 * `heartbeatRawRoute`); `app.request()` reaches the Hono route. Both must answer alike: status, body, envelope,
 * request id, and the order of the checks (401 before the body, 401 for a bad body with an unknown token).
 */
let platform: TestPlatform;
let fake: FakeProvisioner;
let base: string;

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake, { maxBodyBytes: 1024 });
  base = await platform.listen();
});
afterAll(() => platform.close());

async function registered(name: string): Promise<{ id: string; token: string }> {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  await platform.runner.drain();
  const id: string = created.body.workspace.id;
  const boot = fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN;
  const response = await platform.call("POST", "/registry/register", { token: boot, body: { id } });
  return { id, token: response.body.auth_token };
}

interface Case {
  token: string | null;
  body: string;
  type?: string;
}

/** The same request through the server (raw route) and through `app.request()` (Hono route). */
async function both(request: Case) {
  const headers: Record<string, string> = { "content-type": request.type ?? "application/json" };
  if (request.token) headers.authorization = `Bearer ${request.token}`;
  const answers = [];
  for (const send of [
    () => fetch(`${base}/registry/heartbeat`, { method: "POST", headers, body: request.body }),
    () => platform.app.request("/registry/heartbeat", { method: "POST", headers, body: request.body }),
  ]) {
    const response = await send();
    const text = await response.text();
    const body = JSON.parse(text);
    const requestId = response.headers.get("x-request-id");
    expect(requestId).toMatch(/^req_/);
    if (body.error) {
      expect(body.error.requestId).toBe(requestId);
      body.error.requestId = "…";
    }
    answers.push({ status: response.status, type: response.headers.get("content-type"), body });
  }
  const [served, hono] = answers;
  expect(served).toEqual(hono);
  return served as { status: number; body: { error?: { code: string } } };
}

describe("the served heartbeat answers as the Hono route", () => {
  it("for every kind of request", async () => {
    const agent = await registered("served");
    const other = await registered("other");
    const good = JSON.stringify({ workspace_id: agent.id });
    const large = JSON.stringify({ workspace_id: agent.id, detail: "x".repeat(2000) });
    const cases: Array<[Case, number]> = [
      [{ token: null, body: good }, 401],
      [{ token: null, body: "not json" }, 401],
      [{ token: "mwt_unknown", body: "not json" }, 401],
      [{ token: "mwt_unknown", body: large }, 401],
      [{ token: "mwt_unknown", body: good, type: "text/plain" }, 401],
      [{ token: agent.token, body: "not json" }, 400],
      [{ token: agent.token, body: JSON.stringify({ workspace_id: 42 }) }, 400],
      [{ token: agent.token, body: good, type: "text/plain" }, 415],
      [{ token: agent.token, body: large }, 413],
      [{ token: agent.token, body: JSON.stringify({ workspace_id: other.id }) }, 403],
      [{ token: ADMIN_TOKEN, body: JSON.stringify({ workspace_id: "ws_0000000000aaaaaaaaaaaaaaaa" }) }, 404],
      [{ token: agent.token, body: good }, 200],
      // the steady state, answered from memory by both
      [{ token: agent.token, body: good }, 200],
      [{ token: agent.token, body: "" }, 400],
    ];
    for (const [request, status] of cases) {
      const answer = await both(request);
      expect(answer.status, JSON.stringify(request).slice(0, 120)).toBe(status);
    }
    await platform.heartbeats.flush();
  });

  it("a successful served heartbeat is logged at debug with its route, a refused one at info", async () => {
    const agent = await registered("logged");
    const send = (token: string) =>
      fetch(`${base}/registry/heartbeat`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ workspace_id: agent.id }),
      });
    const ok = await send(agent.token);
    const refused = await send("mwt_unknown");
    expect([ok.status, refused.status]).toEqual([200, 401]);
    const line = (requestId: string | null) =>
      platform.logs
        .map((text) => JSON.parse(text))
        .find((entry) => entry.requestId === requestId && entry.msg === "request");
    expect(line(ok.headers.get("x-request-id"))).toMatchObject({
      level: 20,
      method: "POST",
      route: "/registry/heartbeat",
      status: 200,
    });
    expect(line(refused.headers.get("x-request-id"))).toMatchObject({ level: 30, status: 401 });
  });
});

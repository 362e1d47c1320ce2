/**
 * Ids a client sends the tenant platform: in a path (`/workspaces/:id/…`, `/operations/:id`, the A2A proxy, discovery,
 * events) and in registry bodies (`RegisterBody.id`, `HeartbeatBody.workspace_id`). Anything but a minted id of the
 * right kind is a 400 with the envelope; nothing is written and no backend is asked.
 */
import { operations, workspaces as workspaceRows, workspaceSecrets, workspaceTokens } from "@molecule/db";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HOSTILE_WORKSPACE_IDS } from "../../../test-support/hostile-ids.ts";
import {
  createTestPlatform,
  errorOf,
  type TestPlatform,
  type TestResponse,
} from "../../../test-support/platform.ts";

let platform: TestPlatform;
let fake: FakeProvisioner;
let agent: { id: string; token: string };

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake);
  const created = await platform.call("POST", "/workspaces", { body: { name: "ids", runtime: "echo" } });
  await platform.runner.drain();
  const id: string = created.body.workspace.id;
  const boot = fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN;
  const registered = await platform.call("POST", "/registry/register", { token: boot, body: { id } });
  expect(registered.status).toBe(200);
  agent = { id, token: registered.body.auth_token };
});
afterAll(() => platform.close());

/** Every row the platform keeps for workspaces, and the backend's state. */
async function world(): Promise<string> {
  const db = platform.deps.db;
  return JSON.stringify([
    await db.select().from(workspaceRows),
    await db.select().from(operations),
    await db.select().from(workspaceTokens),
    await db.select().from(workspaceSecrets),
    fake.workspaces(),
  ]);
}

function expectBadRequest(response: TestResponse, what: string): void {
  expect(response.status, what).toBe(400);
  const error = errorOf(response);
  expect(error.code, what).toBe("bad_request");
  expect(error.requestId).toMatch(/^req_/);
}

describe("ids a client sends", () => {
  it("every :id route refuses anything but an id of its kind with 400; nothing changes", async () => {
    const before = await world();
    const routes: [string, (id: string) => string, unknown?][] = [
      ["GET", (id) => `/workspaces/${id}`],
      ["GET", (id) => `/workspaces/${id}/operations`],
      ["DELETE", (id) => `/workspaces/${id}`],
      ["POST", (id) => `/workspaces/${id}/stop`],
      ["POST", (id) => `/workspaces/${id}/start`],
      ["POST", (id) => `/workspaces/${id}/restart`],
      ["POST", (id) => `/workspaces/${id}/redeploy`],
      ["POST", (id) => `/workspaces/${id}/suspend`],
      ["GET", (id) => `/workspaces/${id}/secrets`],
      ["PUT", (id) => `/workspaces/${id}/secrets/API_KEY`, { value: "v" }],
      ["DELETE", (id) => `/workspaces/${id}/secrets/API_KEY`],
      ["GET", (id) => `/workspaces/${id}/events`],
      [
        "POST",
        (id) => `/workspaces/${id}/a2a`,
        { jsonrpc: "2.0", id: 1, method: "message/send", params: {} },
      ],
      ["GET", (id) => `/registry/discover/${id}`],
      ["GET", (id) => `/workspaces/${id}/.well-known/agent-card.json`],
      ["GET", (id) => `/operations/${id}`],
    ];
    for (const bad of HOSTILE_WORKSPACE_IDS) {
      const path = (route: (id: string) => string) => route(encodeURIComponent(bad));
      for (const [method, route, body] of routes) {
        const target = path(route);
        if (new URL(target, "http://tenant").pathname !== target || bad === "") continue; // another path already
        const what = `${method} ${target}`;
        const response = await platform.call(method, target, body === undefined ? {} : { body });
        if (target.startsWith("/operations/") && bad.startsWith("op_") && bad.length === 29) {
          expect(response.status, what).toBe(404); // an operation id, just not one of ours
        } else {
          expectBadRequest(response, what);
          expect(errorOf(response).message).toMatch(/(workspace|operation) id in the path/);
        }
      }
    }
    expect(await world()).toBe(before);
  });

  it("register and heartbeat bodies with anything but a workspace id are 400; nothing changes", async () => {
    const before = await world();
    for (const bad of HOSTILE_WORKSPACE_IDS) {
      const what = JSON.stringify(bad);
      const register = await platform.call("POST", "/registry/register", {
        token: agent.token,
        body: { id: bad },
      });
      expectBadRequest(register, `register ${what}`);
      const heartbeat = await platform.call("POST", "/registry/heartbeat", {
        token: agent.token,
        body: { workspace_id: bad },
      });
      expectBadRequest(heartbeat, `heartbeat ${what}`);
    }
    expect(await world()).toBe(before);
    // The agent itself still beats.
    const ok = await platform.call("POST", "/registry/heartbeat", {
      token: agent.token,
      body: { workspace_id: agent.id },
    });
    expect(ok.status).toBe(200);
  });
});

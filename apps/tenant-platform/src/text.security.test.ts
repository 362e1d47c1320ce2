/**
 * Text the database cannot store (NUL, unpaired surrogates) and control characters in one-line fields are refused
 * with a 400 and the error envelope where they enter, before any query: workspace names and URLs, metadata keys and
 * values, agent cards at any depth, heartbeat details, and ids and secret names in paths. Nothing changes and
 * nothing is logged as an unhandled error.
 */
import { workspaces } from "@molecule/db";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestPlatform,
  errorOf,
  type TestPlatform,
  type TestResponse,
} from "../../../test-support/platform.ts";

let platform: TestPlatform;
let fake: FakeProvisioner;

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake);
});
afterAll(() => platform.close());

function expectBadRequest(response: TestResponse, label: string) {
  expect(response.status, label).toBe(400);
  expect(errorOf(response).code, label).toBe("bad_request");
}

async function rowCount(): Promise<number> {
  return (await platform.deps.db.select().from(workspaces)).length;
}

async function registered(): Promise<{ id: string; token: string }> {
  const created = await platform.call("POST", "/workspaces", { body: { name: "agent", runtime: "echo" } });
  await platform.runner.drain();
  const id: string = created.body.workspace.id;
  const boot = fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN;
  const response = await platform.call("POST", "/registry/register", { token: boot, body: { id } });
  expect(response.status).toBe(200);
  return { id, token: response.body.auth_token };
}

describe("hostile text on the tenant platform", () => {
  it("a create with NUL or control characters in its name, URL or metadata is a 400 and creates nothing", async () => {
    const before = await rowCount();
    const bodies: [string, unknown][] = [
      ["NUL in name", { name: "a\u0000b", runtime: "echo" }],
      ["escape in name", { name: "\u001b[31mred", runtime: "echo" }],
      ["line break in name", { name: "a\nb", runtime: "echo" }],
      ["lone surrogate in name", { name: "a\ud800", runtime: "echo" }],
      ["NUL in metadata value", { name: "a", runtime: "echo", metadata: { k: "v\u0000" } }],
      ["NUL in metadata key", { name: "a", runtime: "echo", metadata: { "k\u0000": "v" } }],
      ["lone surrogate in metadata", { name: "a", runtime: "echo", metadata: { k: "\udfff" } }],
      ["NUL in url", { name: "a", external: true, url: "https://agent.example.com/\u0000" }],
      ["tab in url", { name: "a", external: true, url: "https://agent.exa\tmple.com/" }],
    ];
    for (const [label, body] of bodies) {
      expectBadRequest(await platform.call("POST", "/workspaces", { body }), label);
    }
    expect(await rowCount()).toBe(before);
  });

  it("ids and secret names in paths are checked before any query", async () => {
    const { id } = await registered();
    const paths: [string, string][] = [
      ["GET", "/workspaces/ws_%00"],
      ["GET", `/workspaces/${id}%00`],
      ["GET", `/workspaces/${id}%00/operations`],
      ["POST", `/workspaces/${id}%00/stop`],
      ["GET", "/operations/op_%00"],
      ["PUT", `/workspaces/${id}/secrets/API%00KEY`],
      ["DELETE", `/workspaces/${id}/secrets/API%00KEY`],
      ["GET", `/registry/discover/${id}%00`],
      ["POST", `/workspaces/${id}%00/a2a`],
    ];
    for (const [method, path] of paths) {
      const body =
        method === "PUT"
          ? { value: "v" }
          : method === "POST"
            ? { jsonrpc: "2.0", id: 1, method: "tasks/get" }
            : undefined;
      expectBadRequest(
        await platform.call(method, path, body === undefined ? {} : { body }),
        `${method} ${path}`,
      );
    }
  });

  it("an agent card with NUL anywhere (a key, a nested value) is a 400 and the boot token stays unspent", async () => {
    const created = await platform.call("POST", "/workspaces", { body: { name: "carded", runtime: "echo" } });
    await platform.runner.drain();
    const id: string = created.body.workspace.id;
    const boot = fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN;
    const cards: unknown[] = [
      { name: "a\u0000" },
      { name: "a", description: "b\u0000" },
      { name: "a", skills: [{ id: "s", tags: ["x\u0000"] }] },
      { name: "a", provider: { "organization\u0000": "o" } },
      { name: "a", extensions: [[[{ deep: "\ud800" }]]] },
    ];
    for (const agent_card of cards) {
      expectBadRequest(
        await platform.call("POST", "/registry/register", { token: boot, body: { id, agent_card } }),
        JSON.stringify(agent_card),
      );
    }
    const [row] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
    expect(row?.agentCard).toBeNull();
    const card = { name: "a", description: "line one\nline two", skills: [{ id: "s", tags: ["x"] }] };
    const accepted = await platform.call("POST", "/registry/register", {
      token: boot,
      body: { id, agent_card: card },
    });
    expect(accepted.status).toBe(200);
    const [after] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
    expect(after?.agentCard).toEqual(card);
  });

  it("a degraded heartbeat's detail with NUL is a 400 and records nothing; a multi-line one is kept", async () => {
    const agent = await registered();
    // What the registration recorded (it counts as the first heartbeat): the refused beat must not change it.
    const registeredAt = (await platform.call("GET", `/workspaces/${agent.id}`)).body.lastHeartbeatAt;
    expect(registeredAt).not.toBeNull();
    platform.clock.advance(1_000);
    const refused = await platform.call("POST", "/registry/heartbeat", {
      token: agent.token,
      body: { workspace_id: agent.id, status: "degraded", detail: "disk\u0000full" },
    });
    expectBadRequest(refused, "NUL in detail");
    await platform.heartbeats.flush();
    expect((await platform.call("GET", `/workspaces/${agent.id}`)).body).toMatchObject({
      lastHeartbeatAt: registeredAt,
      status: "online",
    });
    const online = await platform.call("POST", "/registry/heartbeat", {
      token: agent.token,
      body: { workspace_id: agent.id },
    });
    expect(online.body).toEqual({ ok: true, status: "online", heartbeat_interval_seconds: 30 });
    const kept = await platform.call("POST", "/registry/heartbeat", {
      token: agent.token,
      body: { workspace_id: agent.id, status: "degraded", detail: "disk full\n/var at 100%" },
    });
    expect(kept.status).toBe(200);
    const shown = await platform.call("GET", `/workspaces/${agent.id}`);
    expect(shown.body).toMatchObject({ status: "degraded", statusReason: "disk full\n/var at 100%" });
  });

  it("none of it was logged as an unhandled error", () => {
    const logs = platform.logs.join("");
    expect(logs).not.toContain("unhandled error");
    expect(logs).not.toContain("Failed query");
  });
});

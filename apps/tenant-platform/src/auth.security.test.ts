import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";

let platform: TestPlatform;
let fake: FakeProvisioner;
let workspaceId: string;
let otherId: string;
let authToken: string;
let otherBootToken: string;

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake);
  const one = await platform.call("POST", "/workspaces", {
    body: { name: "one", runtime: "echo", secrets: { K: "v" } },
  });
  const two = await platform.call("POST", "/workspaces", { body: { name: "two", runtime: "echo" } });
  await platform.runner.drain();
  workspaceId = one.body.workspace.id;
  otherId = two.body.workspace.id;
  const boot = fake.inspect(workspaceId)?.instance?.env.WORKSPACE_BOOT_TOKEN;
  otherBootToken = fake.inspect(otherId)?.instance?.env.WORKSPACE_BOOT_TOKEN ?? "";
  authToken = (await platform.call("POST", "/registry/register", { token: boot, body: { id: workspaceId } }))
    .body.auth_token;
});
afterAll(() => platform.close());

const adminRoutes = (): [string, string, unknown?][] => [
  ["GET", "/workspaces"],
  ["POST", "/workspaces", { name: "x", runtime: "echo" }],
  ["GET", `/workspaces/${workspaceId}`],
  ["DELETE", `/workspaces/${workspaceId}`],
  ["POST", `/workspaces/${workspaceId}/stop`],
  ["POST", `/workspaces/${workspaceId}/start`],
  ["POST", `/workspaces/${workspaceId}/restart`],
  ["POST", `/workspaces/${workspaceId}/redeploy`],
  ["GET", `/workspaces/${workspaceId}/secrets`],
  ["PUT", `/workspaces/${workspaceId}/secrets/K`, { value: "changed" }],
  ["DELETE", `/workspaces/${workspaceId}/secrets/K`],
  ["GET", "/operations/op_0000000000aaaaaaaaaaaaaaaa"],
  ["POST", "/admin/reconcile"],
  ["GET", "/admin/stats"],
  ["POST", "/admin/backup"],
  ["GET", "/admin/backups"],
  ["GET", "/pools"],
  ["PUT", "/pools", { runtime: "echo", tier: 2, size: 1 }],
];

describe("admin routes", () => {
  it("answer 401 without a token, with a wrong one, or with a malformed header; nothing changes", async () => {
    for (const [method, path, body] of adminRoutes()) {
      for (const token of [null, "wrong-token-wrong-token", `${"test-admin-token-0123456789abcdef"}x`]) {
        const response = await platform.call(method, path, { token, body });
        expect(response.status, `${method} ${path} with ${token}`).toBe(401);
        expect(response.body.error.code).toBe("unauthorized");
      }
    }
    const raw = await platform.app.request("/workspaces", { headers: { authorization: "Basic abc" } });
    expect(raw.status).toBe(401);
    expect(fake.inspect(workspaceId)?.instance?.state).toBe("running");
    const secrets = await platform.call("GET", `/workspaces/${workspaceId}/secrets/values`, {
      token: authToken,
    });
    expect(secrets.body.secrets).toEqual({ K: "v" });
  });

  it("answer 403 to a workspace token", async () => {
    for (const [method, path, body] of adminRoutes()) {
      const response = await platform.call(method, path, { token: authToken, body });
      expect(response.status, `${method} ${path}`).toBe(403);
      expect(response.body.error.code).toBe("forbidden");
    }
  });

  it("a boot token is not an admin or workspace credential", async () => {
    const response = await platform.call("GET", "/workspaces", { token: otherBootToken });
    expect(response.status).toBe(401);
  });
});

describe("workspace credentials", () => {
  it("secret values go only to the workspace's own token", async () => {
    expect(
      (await platform.call("GET", `/workspaces/${workspaceId}/secrets/values`, { token: authToken })).status,
    ).toBe(200);
    expect(
      (await platform.call("GET", `/workspaces/${otherId}/secrets/values`, { token: authToken })).status,
    ).toBe(403);
    expect((await platform.call("GET", `/workspaces/${workspaceId}/secrets/values`)).status).toBe(403);
    expect(
      (await platform.call("GET", `/workspaces/${workspaceId}/secrets/values`, { token: null })).status,
    ).toBe(401);
  });

  it("a workspace cannot heartbeat for another", async () => {
    const response = await platform.call("POST", "/registry/heartbeat", {
      token: authToken,
      body: { workspace_id: otherId },
    });
    expect(response.status).toBe(403);
    expect((await platform.call("GET", `/workspaces/${otherId}`)).body.status).toBe("awaiting_agent");
  });

  it("a boot token registers only its own workspace, once", async () => {
    const wrong = await platform.call("POST", "/registry/register", {
      token: otherBootToken,
      body: { id: workspaceId },
    });
    expect(wrong.status).toBe(401);
    const noToken = await platform.call("POST", "/registry/register", { token: null, body: { id: otherId } });
    expect(noToken.status).toBe(401);
    const [a, b] = await Promise.all([
      platform.call("POST", "/registry/register", { token: otherBootToken, body: { id: otherId } }),
      platform.call("POST", "/registry/register", { token: otherBootToken, body: { id: otherId } }),
    ]);
    expect([a.status, b.status].sort()).toEqual([200, 401]);
  });

  it("registering again revokes the earlier bearer token", async () => {
    const admin = await platform.call("POST", "/registry/register", { body: { id: workspaceId } });
    expect(admin.status).toBe(200);
    const old = await platform.call("POST", "/registry/heartbeat", {
      token: authToken,
      body: { workspace_id: workspaceId },
    });
    expect(old.status).toBe(401);
    const fresh = await platform.call("POST", "/registry/heartbeat", {
      token: admin.body.auth_token,
      body: { workspace_id: workspaceId },
    });
    expect(fresh.status).toBe(200);
  });
});

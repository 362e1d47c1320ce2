import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PlatformClient, PlatformError } from "./client.ts";
import { FakePlatform } from "./testing/fake-platform.ts";

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

async function caught(promise: Promise<unknown>): Promise<PlatformError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(PlatformError);
  return err as PlatformError;
}

describe("PlatformClient against the fake platform", () => {
  const platform = new FakePlatform();
  beforeAll(() => platform.start());
  afterAll(() => platform.stop());

  it("registers once with the boot token; a second register with it is 401", async () => {
    const boot = platform.addWorkspace("ws_reg");
    const client = new PlatformClient({ platformUrl: `${platform.url}/`, workspaceId: "ws_reg" });
    const res = await client.register(boot, { url: "http://127.0.0.1:1234", agentCard: { name: "echo" } });
    expect(res.workspaceId).toBe("ws_reg");
    expect(res.authToken).toBe(platform.workspace("ws_reg").authToken);
    expect(platform.workspace("ws_reg").url).toBe("http://127.0.0.1:1234");
    expect(platform.workspace("ws_reg").agentCard).toEqual({ name: "echo" });

    const err = await caught(client.register(boot, { url: null, agentCard: {} }));
    expect(err.status).toBe(401);
    expect(err.code).toBe("unauthorized");
    expect(err.unauthorized).toBe(true);
    expect(err.retryable).toBe(false);
    expect(err.requestId).toMatch(/^req_/);
  });

  it("heartbeats with the auth token, sends status, detail and activity, and reports the platform status", async () => {
    const boot = platform.addWorkspace("ws_hb");
    const client = new PlatformClient({ platformUrl: platform.url, workspaceId: "ws_hb" });
    const { authToken } = await client.register(boot, { url: null, agentCard: {} });
    expect(await client.heartbeat(authToken)).toEqual({ ok: true, status: "online" });
    expect(await client.heartbeat(authToken, { status: "degraded", detail: "slow" })).toEqual({
      ok: true,
      status: "degraded",
    });
    // `active` (reported activity) is sent only when true: a platform that predates it never sees the field.
    await client.heartbeat(authToken, { active: true });
    await client.heartbeat(authToken, { active: false });
    expect(platform.workspace("ws_hb").heartbeats.map((h) => [h.status, h.detail, h.active])).toEqual([
      [undefined, undefined, undefined],
      ["degraded", "slow", undefined],
      [undefined, undefined, true],
      [undefined, undefined, undefined],
    ]);

    const bad = await caught(client.heartbeat("tok_wrong"));
    expect(bad.status).toBe(401);

    platform.remove("ws_hb");
    const gone = await caught(client.heartbeat(authToken));
    expect(gone.status).toBe(410);
    expect(gone.workspaceGone).toBe(true);
    expect(gone.retryable).toBe(false);
  });

  it("takes the secrets and the status a register answer carries; malformed secrets are left out, not an error", async () => {
    const boot = platform.addWorkspace("ws_reg_secrets", { OPENAI_API_KEY: "sk-1" });
    const client = new PlatformClient({ platformUrl: platform.url, workspaceId: "ws_reg_secrets" });
    const res = await client.register(boot, { url: null, agentCard: {} });
    expect(res.secrets).toEqual({ OPENAI_API_KEY: "sk-1" });
    expect(res.status).toBe("online");

    const answer = (secrets: unknown) =>
      new PlatformClient({
        platformUrl: "http://platform.test",
        workspaceId: "ws_x",
        fetch: async () =>
          new Response(
            JSON.stringify({ auth_token: "mwt_a", workspace_id: "ws_x", inbound_token: "mit_b", secrets }),
            {
              status: 200,
            },
          ),
      }).register("mbt_c", { url: null, agentCard: {} });
    for (const bad of [["sk-in-an-array"], { A: 1 }, "sk-text", null]) {
      const registered = await answer(bad);
      expect(registered.authToken).toBe("mwt_a");
      expect(registered).not.toHaveProperty("secrets");
    }
  });

  it("pulls secret values with the auth token", async () => {
    const boot = platform.addWorkspace("ws_sec", { OPENAI_API_KEY: "sk-1", EMPTY: "" });
    const client = new PlatformClient({ platformUrl: platform.url, workspaceId: "ws_sec" });
    const { authToken } = await client.register(boot, { url: null, agentCard: {} });
    expect(await client.pullSecrets(authToken)).toEqual({ OPENAI_API_KEY: "sk-1", EMPTY: "" });
    expect((await caught(client.pullSecrets("nope"))).status).toBe(401);
  });

  it("marks 5xx and 429 retryable and keeps the platform's error code", async () => {
    const boot = platform.addWorkspace("ws_5xx");
    const client = new PlatformClient({ platformUrl: platform.url, workspaceId: "ws_5xx" });
    platform.failNext("register", 503, 429, 400);
    const e503 = await caught(client.register(boot, { url: null, agentCard: {} }));
    expect([e503.status, e503.code, e503.retryable]).toEqual([503, "backend_unavailable", true]);
    const e429 = await caught(client.register(boot, { url: null, agentCard: {} }));
    expect([e429.status, e429.retryable]).toEqual([429, true]);
    const e400 = await caught(client.register(boot, { url: null, agentCard: {} }));
    expect([e400.status, e400.retryable]).toEqual([400, false]);
    // The boot token was not spent by the failures.
    await expect(client.register(boot, { url: null, agentCard: {} })).resolves.toMatchObject({
      workspaceId: "ws_5xx",
    });
  });
});

describe("PlatformClient transports", () => {
  const platform = new FakePlatform();
  beforeAll(() => platform.start());
  afterAll(() => platform.stop());

  it("sends over node:http unless given a fetch: a process's first fetch costs an agent's start-up its undici load", async () => {
    const boot = platform.addWorkspace("ws_nofetch", { K: "v" });
    const globalFetch = globalThis.fetch;
    globalThis.fetch = () => Promise.reject(new Error("the global fetch was used"));
    try {
      const client = new PlatformClient({ platformUrl: platform.url, workspaceId: "ws_nofetch" });
      const { authToken } = await client.register(boot, { url: null, agentCard: {} });
      expect(await client.pullSecrets(authToken)).toEqual({ K: "v" });
      expect(await client.heartbeat(authToken)).toMatchObject({ ok: true, status: "online" });
    } finally {
      globalThis.fetch = globalFetch;
    }
  });

  it("sends through the fetch it is given", async () => {
    const boot = platform.addWorkspace("ws_fetch");
    const seen: string[] = [];
    const client = new PlatformClient({
      platformUrl: platform.url,
      workspaceId: "ws_fetch",
      fetch: (input, init) => {
        seen.push(`${init.method} ${new URL(input).pathname}`);
        return fetch(input, init);
      },
    });
    const { authToken } = await client.register(boot, { url: null, agentCard: {} });
    await client.heartbeat(authToken);
    expect(seen).toEqual(["POST /registry/register", "POST /registry/heartbeat"]);
  });
});

describe("PlatformClient transport failures", () => {
  let server: Server | null = null;
  afterEach(async () => {
    if (server) await close(server);
    server = null;
  });

  it("reports a refused connection as a retryable network_error", async () => {
    const probe = createServer();
    const url = await listen(probe);
    await close(probe); // nothing listens on that port any more
    const client = new PlatformClient({ platformUrl: url, workspaceId: "ws_x" });
    const err = await caught(client.heartbeat("t"));
    expect([err.status, err.code, err.retryable]).toEqual([null, "network_error", true]);
    expect(err.message).toContain("ECONNREFUSED");
  });

  it("times out a platform that never answers", async () => {
    server = createServer(() => {
      /* never responds */
    });
    const url = await listen(server);
    const client = new PlatformClient({ platformUrl: url, workspaceId: "ws_x", timeoutMs: 150 });
    const err = await caught(client.heartbeat("t"));
    expect([err.code, err.retryable]).toEqual(["timeout", true]);
  });

  it("stops at once when the caller aborts, without retryable", async () => {
    server = createServer(() => {});
    const url = await listen(server);
    const client = new PlatformClient({ platformUrl: url, workspaceId: "ws_x" });
    const controller = new AbortController();
    const pending = client.heartbeat("t", {}, { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    const err = await caught(pending);
    expect([err.code, err.retryable]).toEqual(["aborted", false]);
  });

  it("handles bodies that are not the envelope, and never echoes a non-JSON body", async () => {
    let reply: [number, string] = [502, "<html>bad gateway secret-ish</html>"];
    server = createServer((_req, res) => {
      res.writeHead(reply[0], { "content-type": "text/html" });
      res.end(reply[1]);
    });
    const url = await listen(server);
    const client = new PlatformClient({ platformUrl: url, workspaceId: "ws x/y" });
    const e502 = await caught(client.pullSecrets("t"));
    expect([e502.status, e502.code, e502.retryable]).toEqual([502, "http_502", true]);
    expect(e502.message).not.toContain("secret-ish");

    reply = [200, JSON.stringify({ secrets: { A: 1 } })];
    const bad = await caught(client.pullSecrets("t"));
    expect([bad.code, bad.retryable]).toEqual(["invalid_response", false]);

    reply = [200, "not json"];
    expect((await caught(client.heartbeat("t"))).code).toBe("invalid_response");
  });

  it("sends the bearer token and encodes the workspace id in the secrets path", async () => {
    const seen: { url?: string; auth?: string }[] = [];
    server = createServer((req, res) => {
      seen.push({ url: req.url, auth: req.headers.authorization });
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ secrets: {} }));
    });
    const url = await listen(server);
    const client = new PlatformClient({ platformUrl: url, workspaceId: "ws x/y" });
    await client.pullSecrets("tok_abc");
    expect(seen).toEqual([{ url: "/workspaces/ws%20x%2Fy/secrets/values", auth: "Bearer tok_abc" }]);
  });

  it("rejects a platform URL that is not http(s)", () => {
    expect(() => new PlatformClient({ platformUrl: "ftp://x", workspaceId: "ws" })).toThrow(/http/);
    expect(() => new PlatformClient({ platformUrl: "nope", workspaceId: "ws" })).toThrow(/valid URL/);
  });
});

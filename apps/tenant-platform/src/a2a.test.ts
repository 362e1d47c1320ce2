import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import {
  INBOUND_TOKEN_HEADER,
  type InboundAuth,
  messageText,
  type StartedA2AServer,
  startA2AServer,
} from "@molecule/agent-sdk";
import { workspaces } from "@molecule/db";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform, type TestResponse } from "../../../test-support/platform.ts";
import { waitFor } from "../../../test-support/wait.ts";
import { mayTalk } from "./services/a2a.ts";

let platform: TestPlatform;
let base: string;
const agents: StartedA2AServer[] = [];
const servers: Server[] = [];

interface Ws {
  id: string;
  token: string;
  inboundToken: string;
  url: string | null;
}
let caller: Ws;
let target: Ws;
let recorder: Ws;
let streamer: Ws;
let slow: Ws;
let down: Ws;
let stopped: Ws;
let offline: Ws;

/** What each SDK agent accepts, by its URL: the inbound token its registration answered (pending until then). */
const agentAuth = new Map<string, InboundAuth>();
/** The headers of every request the recording agent got. */
const recorded: IncomingHttpHeaders[] = [];

/** Upstream SSE: the second event is written only once the test has read the first through the proxy. */
let releaseSecond: () => void = () => undefined;
let upstreamFinishedAt = 0;
/** Called when the proxy closes an upstream event stream before it ended. */
let upstreamAbandoned: () => void = () => undefined;

function send(text: string, id: string | number = 1, method = "message/send") {
  return {
    jsonrpc: "2.0",
    id,
    method,
    params: { message: { role: "user", messageId: `m-${id}`, parts: [{ kind: "text", text }] } },
  };
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  servers.push(server);
  return (server.address() as AddressInfo).port;
}

async function echoAgent(name: string): Promise<string> {
  const agent = await startA2AServer({
    host: "127.0.0.1",
    port: 0,
    card: { name, description: `${name} echoes`, skills: [] },
    inbound: () => agentAuth.get(url) ?? "pending",
    onMessage: async (message) => ({ parts: [{ kind: "text", text: `${name}: ${messageText(message)}` }] }),
  });
  agents.push(agent);
  const url = `http://127.0.0.1:${agent.port}/`;
  return url;
}

/** Creates a workspace (fake backend), registers it by hand with the admin token at `url`, heartbeats it online. */
async function addWorkspace(name: string, url: string | null, card?: Record<string, unknown>): Promise<Ws> {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  expect(created.status).toBe(202);
  await platform.runner.drain();
  const id = created.body.workspace.id as string;
  const registered = await platform.call("POST", "/registry/register", {
    body: { id, url, ...(card ? { agent_card: card } : {}) },
  });
  expect(registered.status).toBe(200);
  const token = registered.body.auth_token as string;
  const inboundToken = registered.body.inbound_token as string;
  if (url) agentAuth.set(url, { token: inboundToken });
  const beat = await platform.call("POST", "/registry/heartbeat", { token, body: { workspace_id: id } });
  expect(beat.body.status).toBe("online");
  return { id, token, inboundToken, url };
}

/**
 * How the proxy is reached: served over HTTP (the raw route in front of the Hono app, as `main()` serves it) or in
 * process with `app.request()` (the Hono route). Every proxy test runs both ways.
 */
let via: "served" | "in process" = "served";

function proxyCall(
  id: string,
  options: { token: string | null; body: unknown; headers?: Record<string, string> },
) {
  const path = `/workspaces/${id}/a2a`;
  return via === "served" ? platform.callServed("POST", path, options) : platform.call("POST", path, options);
}

function a2a(id: string, body: unknown, token: string | null) {
  return proxyCall(id, { token, body });
}

/**
 * An error the proxy raised itself, as A2A clients read it: a JSON-RPC error object answering the request's id, our
 * stable code and the request id in `error.data`. Returns the stable code.
 */
function proxyError(response: TestResponse, rpcId: string | number | null = 1): string {
  expect(response.body).toMatchObject({
    jsonrpc: "2.0",
    id: rpcId,
    error: {
      code: expect.any(Number),
      message: expect.any(String),
      data: { code: expect.any(String), request_id: response.headers.get("x-request-id") },
    },
  });
  return response.body.error.data.code;
}

beforeAll(async () => {
  // Its agents listen on 127.0.0.1 over plain HTTP: the platform must allow private and insecure agent URLs.
  platform = await createTestPlatform(createFakeProvisioner(), {
    allowInsecureAgentUrls: true,
    allowPrivateAgentUrls: true,
  });

  const sse = createServer((req, res) => {
    req.resume();
    if (req.url === "/slow") {
      const timer = setTimeout(() => res.end("{}"), 3_000);
      res.on("close", () => clearTimeout(timer));
      return;
    }
    res.on("close", () => {
      if (!res.writableFinished) upstreamAbandoned();
    });
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    res.write(
      `data: ${JSON.stringify({ jsonrpc: "2.0", id: 7, result: { kind: "status-update", n: 1 } })}\n\n`,
    );
    const second = new Promise<void>((resolve) => {
      releaseSecond = resolve;
      setTimeout(resolve, 3_000).unref(); // never hang: a buffering proxy just makes the test fail
    });
    void second.then(() => {
      res.write(
        `data: ${JSON.stringify({ jsonrpc: "2.0", id: 7, result: { kind: "status-update", n: 2 } })}\n\n`,
      );
      upstreamFinishedAt = Date.now();
      res.end();
    });
  });
  const ssePort = await listen(sse);
  const recording = createServer((req, res) => {
    recorded.push(req.headers);
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({ jsonrpc: "2.0", id: 1, result: { kind: "message", role: "agent", parts: [] } }),
      );
    });
  });
  const recorderPort = await listen(recording);
  const closed = createServer();
  const closedPort = await listen(closed);
  await new Promise((resolve) => closed.close(resolve));
  servers.pop();

  caller = await addWorkspace("caller", await echoAgent("caller"));
  const targetUrl = await echoAgent("target");
  // Its card names its own address, as an agent's does: callers are given the proxy's instead.
  target = await addWorkspace("target", targetUrl, {
    name: "target",
    skills: [{ id: "echo" }],
    url: targetUrl,
  });
  streamer = await addWorkspace("streamer", `http://127.0.0.1:${ssePort}/`);
  recorder = await addWorkspace("recorder", `http://127.0.0.1:${recorderPort}/`);
  slow = await addWorkspace("slow", `http://127.0.0.1:${ssePort}/slow`);
  down = await addWorkspace("down", `http://127.0.0.1:${closedPort}/`);
  offline = await addWorkspace("offline", await echoAgent("offline"));
  stopped = await addWorkspace("stopped", await echoAgent("stopped"));
  expect((await platform.call("POST", `/workspaces/${stopped.id}/stop`)).status).toBe(202);
  await platform.runner.drain();
  expect((await platform.call("GET", `/workspaces/${stopped.id}`)).body.status).toBe("stopped");
  base = await platform.listen(); // after the set-up, so the test drains operations rather than the runner
}, 60_000);

afterAll(async () => {
  await Promise.all(agents.map((agent) => agent.close(100)));
  for (const server of servers) server.closeAllConnections();
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  await platform.close();
});

describe.each(["served", "in process"] as const)("POST /workspaces/:id/a2a, %s", (how) => {
  beforeAll(() => {
    via = how;
  });

  it("forwards message/send from one workspace to another with the caller's own token", async () => {
    const response = await a2a(target.id, send("hello", 42), caller.token);
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({
      jsonrpc: "2.0",
      id: 42,
      result: { kind: "message", role: "agent" },
    });
    expect(response.body.result.parts[0].text).toBe("target: hello");
    expect(platform.logs.join("")).not.toContain("hello");
  });

  it("announces each delivery on the event stream, metadata only", async () => {
    const seen: { type: string; data: unknown }[] = [];
    const subscription = platform.deps.events.subscribe({}, (event) => seen.push(event));
    await a2a(target.id, send("secret words", 7), caller.token);
    subscription.unsubscribe();
    const delivery = seen.find((event) => event.type === "a2a.delivery");
    expect(delivery?.data).toMatchObject({ caller: caller.id, method: "message/send", streamed: false });
    expect(JSON.stringify(seen)).not.toContain("secret words");
  });

  it("lets the admin call, over real HTTP", async () => {
    const response = await fetch(`${base}/workspaces/${target.id}/a2a`, {
      method: "POST",
      headers: {
        authorization: "Bearer test-admin-token-0123456789abcdef",
        "content-type": "application/json",
      },
      body: JSON.stringify(send("from admin", "a-1")),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { id: string; result: { parts: { text: string }[] } };
    expect(body.id).toBe("a-1");
    expect(body.result.parts[0]?.text).toBe("target: from admin");
  });

  it("passes message/stream through unbuffered: the first event arrives before the upstream finishes", async () => {
    upstreamFinishedAt = 0;
    const path = `/workspaces/${streamer.id}/a2a`;
    const request = (init: RequestInit) =>
      via === "served" ? fetch(`${base}${path}`, init) : platform.app.request(path, init);
    const response = await request({
      method: "POST",
      headers: { authorization: `Bearer ${caller.token}`, "content-type": "application/json" },
      body: JSON.stringify(send("stream please", 7, "message/stream")),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    const first = await reader.read();
    const firstAt = Date.now();
    expect(decoder.decode(first.value)).toContain('"n":1');
    expect(upstreamFinishedAt).toBe(0);
    releaseSecond();
    let rest = "";
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) break;
      rest += decoder.decode(chunk.value, { stream: true });
    }
    expect(rest).toContain('"n":2');
    expect(upstreamFinishedAt).toBeGreaterThanOrEqual(firstAt);
  });

  it("a client leaving an event stream closes the upstream request at once", async () => {
    const abandoned = new Promise<void>((resolve) => {
      upstreamAbandoned = resolve;
    });
    const path = `/workspaces/${streamer.id}/a2a`;
    const client = new AbortController();
    const init: RequestInit = {
      method: "POST",
      headers: { authorization: `Bearer ${caller.token}`, "content-type": "application/json" },
      body: JSON.stringify(send("leave early", 7, "message/stream")),
      signal: client.signal,
    };
    const response = await (via === "served"
      ? fetch(`${base}${path}`, init)
      : platform.app.request(path, init));
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toContain('"n":1');
    if (via === "served") client.abort();
    else await reader.cancel();
    // Well before the upstream's own second event (3 s): the proxy let go of it.
    const outcome = await Promise.race([
      abandoned.then(() => "closed"),
      new Promise((resolve) => setTimeout(() => resolve("still open"), 2_000)),
    ]);
    expect(outcome).toBe("closed");
    releaseSecond();
  });

  it("is the only way in: the target's agent refuses a direct call without its inbound token", async () => {
    expect(target.inboundToken).toMatch(/^mit_[A-Za-z0-9_-]{43}$/);
    const url = target.url ?? "";
    for (const headers of <Record<string, string>[]>[{}, { [INBOUND_TOKEN_HEADER]: caller.inboundToken }]) {
      const direct = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify(send("around the platform")),
      });
      expect(direct.status).toBe(401);
    }
    // The same message through the proxy is answered.
    const proxied = await a2a(target.id, send("through the platform"), caller.token);
    expect(proxied.status).toBe(200);
    expect(proxied.body.result.parts[0].text).toBe("target: through the platform");
  });

  it("presents the target's inbound token itself and forwards none of the caller's headers", async () => {
    recorded.length = 0;
    const response = await proxyCall(recorder.id, {
      token: caller.token,
      body: send("forged"),
      headers: { [INBOUND_TOKEN_HEADER]: "mit_forged-by-the-caller", "x-molecule-caller": "admin" },
    });
    expect(response.status).toBe(200);
    expect(recorded).toHaveLength(1);
    const seen = recorded[0] ?? {};
    expect(seen[INBOUND_TOKEN_HEADER]).toBe(recorder.inboundToken);
    expect(seen["x-molecule-caller"]).toBe(caller.id);
    expect(seen.authorization).toBeUndefined();
    expect(JSON.stringify(seen)).not.toContain("forged-by-the-caller");
    expect(JSON.stringify(seen)).not.toContain(caller.token);
    // A caller holding the target's inbound token gains nothing by sending it: the platform still decides.
    const stolen = await proxyCall(recorder.id, {
      token: null,
      body: send("stolen"),
      headers: { [INBOUND_TOKEN_HEADER]: recorder.inboundToken },
    });
    expect(stolen.status).toBe(401);
    expect(platform.logs.join("")).not.toContain(recorder.inboundToken);
  });

  it("a new registration replaces the inbound token; the old one is never sent again", async () => {
    const before = await platform.database.db.select().from(workspaces).where(eq(workspaces.id, recorder.id));
    expect(before[0]?.inboundTokenSealed).toBeTruthy();
    expect(before[0]?.inboundTokenSealed).not.toContain(recorder.inboundToken.slice(4));
    const again = await platform.call("POST", "/registry/register", {
      body: { id: recorder.id, url: recorder.url },
    });
    expect(again.status).toBe(200);
    const rotated = again.body.inbound_token as string;
    expect(rotated).toMatch(/^mit_/);
    expect(rotated).not.toBe(recorder.inboundToken);
    expect(again.body.auth_token).not.toBe(recorder.token);
    const beat = await platform.call("POST", "/registry/heartbeat", {
      token: again.body.auth_token,
      body: { workspace_id: recorder.id },
    });
    expect(beat.body.status).toBe("online");

    recorded.length = 0;
    expect((await a2a(recorder.id, send("after rotation"), caller.token)).status).toBe(200);
    expect(recorded.map((headers) => headers[INBOUND_TOKEN_HEADER])).toEqual([rotated]);
    // Not in the workspace's view either.
    const view = await platform.call("GET", `/workspaces/${recorder.id}`);
    expect(JSON.stringify(view.body)).not.toContain(rotated);
    recorder = { ...recorder, token: again.body.auth_token, inboundToken: rotated };
  });

  it("does not call an agent whose inbound token no longer opens (its key version is gone)", async () => {
    const orphan = await addWorkspace("orphan", await echoAgent("orphan"));
    await platform.database.db
      .update(workspaces)
      .set({ inboundTokenKeyVersion: 99 })
      .where(eq(workspaces.id, orphan.id));
    const response = await a2a(orphan.id, send("no key"), caller.token);
    expect(response.status).toBe(503);
    expect(proxyError(response)).toBe("secrets_key_unavailable");
    expect(response.body.error.message).toContain("key version 99");
    expect(JSON.stringify(response.body)).not.toContain(orphan.inboundToken);
  });

  it("a removed workspace keeps no inbound token", async () => {
    const doomed = await addWorkspace("doomed", await echoAgent("doomed"));
    expect((await platform.call("DELETE", `/workspaces/${doomed.id}`)).status).toBe(202);
    const row = await waitFor("the workspace to be removed", async () => {
      const [found] = await platform.database.db
        .select()
        .from(workspaces)
        .where(eq(workspaces.id, doomed.id));
      return found?.status === "removed" ? found : undefined;
    });
    expect(row).toMatchObject({ status: "removed", inboundTokenSealed: null, inboundTokenKeyVersion: null });
  });

  it("401 without a valid token", async () => {
    for (const token of [null, "mwt_not-a-real-token"]) {
      const response = await a2a(target.id, send("x"), token);
      expect(response.status).toBe(401);
      // Refused before the body is read: no id to answer with.
      expect(proxyError(response, null)).toBe("unauthorized");
    }
  });

  it("403 across organisations, and for a workspace calling itself", async () => {
    const otherId = platform.deps.ids.next("ws");
    await platform.database.db.insert(workspaces).values({
      id: otherId,
      orgId: "org_other",
      name: "elsewhere",
      runtime: "echo",
      tier: 1,
      backend: "fake",
      status: "online",
      url: "http://127.0.0.1:9/",
    });
    for (const token of [caller.token, "test-admin-token-0123456789abcdef"]) {
      const response = await a2a(otherId, send("x"), token);
      expect(response.status).toBe(403);
      expect(proxyError(response)).toBe("forbidden");
    }
    expect(
      (await platform.call("GET", `/registry/discover/${otherId}`, { token: caller.token })).status,
    ).toBe(403);
    expect((await a2a(caller.id, send("me"), caller.token)).status).toBe(403);
  });

  it("404 for an unknown target, 400 for a malformed id or envelope, framed as JSON-RPC errors", async () => {
    const unknown = await a2a(platform.deps.ids.next("ws"), send("x", "u-1"), caller.token);
    expect(unknown.status).toBe(404);
    expect(proxyError(unknown, "u-1")).toBe("not_found");
    expect(unknown.body.error.code).toBe(-32042);
    const badId = await a2a("nope", send("x", 5), caller.token);
    expect(badId.status).toBe(400);
    expect(proxyError(badId, null)).toBe("bad_request");
    // Not a JSON-RPC 2.0 request object: -32600, answering the request's id when it has one.
    for (const [body, id] of [
      [{ ...send("x", 3), jsonrpc: "1.0" }, 3],
      [{ ...send("x", 4), method: 5 }, 4],
      [{ jsonrpc: "2.0", id: 6, params: {} }, 6],
      [[send("x")], null],
      ["not an object", null],
    ] as const) {
      const response = await proxyCall(target.id, { token: caller.token, body: JSON.stringify(body) });
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(proxyError(response, id)).toBe("bad_request");
      expect(response.body.error.code).toBe(-32600);
    }
    // Not JSON at all: -32700 with a null id.
    const garbled = await proxyCall(target.id, { token: caller.token, body: '{"jsonrpc": "2.0", "id": 1,' });
    expect(garbled.status).toBe(400);
    expect(proxyError(garbled, null)).toBe("bad_request");
    expect(garbled.body.error.code).toBe(-32700);
  });

  it("forwards any method: the target answers one it does not know itself (-32601, with its id)", async () => {
    const response = await a2a(target.id, send("x", "m-1", "admin/shutdown"), caller.token);
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ jsonrpc: "2.0", id: "m-1", error: { code: -32601 } });
  });

  it("forwards the caller's A2A-Version header and no other of its headers", async () => {
    recorded.length = 0;
    const response = await proxyCall(recorder.id, {
      token: caller.token,
      body: send("x", 1, "SendMessage"),
      headers: { "A2A-Version": "1.0", "x-other": "kept back" },
    });
    expect(response.status).toBe(200);
    expect(recorded[0]?.["a2a-version"]).toBe("1.0");
    expect(recorded[0]?.["x-other"]).toBeUndefined();
  });

  it("reads a body sent as curl's default form type, or with no type, as JSON, like every other route", async () => {
    for (const type of ["application/x-www-form-urlencoded", undefined]) {
      const response = await platform.app.request(`/workspaces/${target.id}/a2a`, {
        method: "POST",
        headers: { authorization: `Bearer ${caller.token}`, ...(type ? { "content-type": type } : {}) },
        // Bytes: a string body would be given a text/plain type by the Request constructor.
        body: new TextEncoder().encode(JSON.stringify(send("from curl", 9))),
      });
      expect(response.status, String(type)).toBe(200);
      const body = (await response.json()) as { result: { parts: { text: string }[] } };
      expect(body.result.parts[0]?.text).toBe("target: from curl");
    }
    const plain = await a2a(target.id, send("x"), caller.token);
    expect(plain.status).toBe(200);
    const refused = await proxyCall(target.id, {
      token: caller.token,
      body: JSON.stringify(send("x")),
      headers: { "content-type": "text/plain" },
    });
    expect(refused.status).toBe(415);
    expect(proxyError(refused, null)).toBe("unsupported_media_type");
  });

  it("503 with Retry-After for a stopped or offline target", async () => {
    const response = await a2a(stopped.id, send("x"), caller.token);
    expect(response.status).toBe(503);
    expect(proxyError(response)).toBe("upstream_unavailable");
    expect(Number(response.headers.get("retry-after"))).toBeGreaterThan(0);

    await platform.database.db
      .update(workspaces)
      .set({ status: "offline" })
      .where(eq(workspaces.id, offline.id));
    const answer = await a2a(offline.id, send("x"), caller.token);
    expect(answer.status).toBe(503);
    expect(answer.headers.get("retry-after")).toBe("30");
  });

  it("413 for a request over A2A_MAX_REQUEST_BYTES", async () => {
    const big = send("x".repeat(platform.deps.settings.a2aMaxRequestBytes + 1));
    const response = await a2a(target.id, big, caller.token);
    expect(response.status).toBe(413);
    expect(proxyError(response, null)).toBe("payload_too_large");
  });

  it("502 when the target's URL does not answer (closed port)", async () => {
    const response = await a2a(down.id, send("x"), caller.token);
    expect(response.status).toBe(502);
    expect(proxyError(response)).toBe("bad_gateway");
  });

  it("504 when the target is slower than A2A_TIMEOUT_SECONDS", async () => {
    const saved = platform.deps.settings.a2aTimeoutMs;
    platform.deps.settings.a2aTimeoutMs = 200;
    try {
      const started = Date.now();
      const response = await a2a(slow.id, send("x"), caller.token);
      expect(response.status).toBe(504);
      expect(proxyError(response)).toBe("gateway_timeout");
      expect(Date.now() - started).toBeLessThan(2_500);
    } finally {
      platform.deps.settings.a2aTimeoutMs = saved;
    }
  });

  it("502 when the answer exceeds A2A_MAX_RESPONSE_BYTES", async () => {
    const saved = platform.deps.settings.a2aMaxResponseBytes;
    platform.deps.settings.a2aMaxResponseBytes = 64;
    try {
      const response = await a2a(target.id, send("y".repeat(200)), caller.token);
      expect(response.status).toBe(502);
      expect(proxyError(response)).toBe("bad_gateway");
    } finally {
      platform.deps.settings.a2aMaxResponseBytes = saved;
    }
  });
});

describe("GET /registry/discover/:id", () => {
  it("gives an authorised caller the target's card, its interfaces pointing at the proxy, and status", async () => {
    const response = await platform.call("GET", `/registry/discover/${target.id}`, { token: caller.token });
    expect(response.status).toBe(200);
    const proxy = `http://localhost/workspaces/${target.id}/a2a`;
    expect(response.body).toEqual({
      workspace_id: target.id,
      name: expect.any(String),
      status: "online",
      reachable: true,
      agent_card: {
        name: "target",
        skills: [{ id: "echo" }],
        url: proxy,
        preferredTransport: "JSONRPC",
        additionalInterfaces: [{ url: proxy, transport: "JSONRPC" }],
      },
    });
    // The same card the A2A discovery route serves.
    const card = await platform.call("GET", `/workspaces/${target.id}/.well-known/agent-card.json`, {
      token: caller.token,
    });
    expect((response.body as { agent_card: unknown }).agent_card).toEqual(card.body);
    expect(JSON.stringify(response.body)).not.toContain(target.url as string);
    const gone = await platform.call("GET", `/registry/discover/${stopped.id}`, { token: caller.token });
    expect(gone.body).toMatchObject({ status: "stopped", reachable: false });
    expect((await platform.call("GET", `/registry/discover/${target.id}`, { token: null })).status).toBe(401);
    expect(
      (
        await platform.call("GET", `/registry/discover/${platform.deps.ids.next("ws")}`, {
          token: caller.token,
        })
      ).status,
    ).toBe(404);
  });
});

describe("mayTalk", () => {
  it("allows the same org, refuses other orgs and self-calls", () => {
    const a = { kind: "workspace" as const, id: "ws_a", orgId: "org_1" };
    const b = { kind: "workspace" as const, id: "ws_b", orgId: "org_1" };
    const c = { kind: "workspace" as const, id: "ws_c", orgId: "org_2" };
    expect(mayTalk(a, b).allowed).toBe(true);
    expect(mayTalk(a, c)).toEqual({ allowed: false, rule: "same-org" });
    expect(mayTalk(a, a)).toEqual({ allowed: false, rule: "no-self-call" });
    expect(mayTalk({ kind: "admin", orgId: "org_1" }, b).allowed).toBe(true);
    expect(mayTalk({ kind: "admin", orgId: "org_1" }, c).allowed).toBe(false);
    expect(mayTalk(a, b, []).allowed).toBe(false);
  });
});

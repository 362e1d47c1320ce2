import { request } from "node:http";
import { INBOUND_TOKEN_HEADER } from "@molecule/contracts/inbound";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asTask, type MessageContext, type ReplyChunk } from "./a2a-handler.ts";
import { type A2AMessage, type A2ATask, messageText } from "./a2a-protocol.ts";
import {
  DEFAULT_MAX_BODY_BYTES,
  type InboundAuth,
  type StartedA2AServer,
  startA2AServer,
} from "./a2a-server.ts";
import { readEventStream } from "./event-stream.ts";

const received: A2AMessage[] = [];
const logged: string[] = [];
let server: StartedA2AServer;
let base = "";

beforeAll(async () => {
  server = await startA2AServer({
    host: "127.0.0.1",
    port: 0,
    maxBodyBytes: 4096,
    card: () => ({ name: "echo", version: "1.0.0", url: base }),
    log: (_level, event, fields) => logged.push(JSON.stringify({ event, ...fields })),
    onMessage: async (message) => {
      received.push(message);
      const text = messageText(message);
      if (text === "boom") throw new Error("db password is hunter2");
      if (text === "bad") return { parts: "nope" } as unknown as { parts: [] };
      return { parts: [{ kind: "text", text: `echo: ${text}` }] };
    },
  });
  base = `http://127.0.0.1:${server.port}`;
});
afterAll(() => server.close());

async function rpc(body: unknown, path = "/") {
  const res = await fetch(`${base}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const send = (message: unknown, id: unknown = 1) => ({
  jsonrpc: "2.0",
  id,
  method: "message/send",
  params: { message },
});
const userMessage = (text: string) => ({ role: "user", parts: [{ kind: "text", text }], messageId: "m1" });

describe("A2A server", () => {
  it("serves health and the agent card", async () => {
    const health = await fetch(`${base}/health`);
    expect([health.status, await health.json()]).toEqual([200, { ok: true }]);
    const card = await fetch(`${base}/.well-known/agent-card.json`);
    expect(card.status).toBe(200);
    expect(card.headers.get("content-type")).toBe("application/json");
    expect(card.headers.get("vary")).toBe("A2A-Version");
    expect(await card.json()).toMatchObject({
      name: "echo",
      version: "1.0.0",
      url: base,
      protocolVersion: "0.3.0",
      preferredTransport: "JSONRPC",
      additionalInterfaces: [{ url: base, transport: "JSONRPC" }],
      capabilities: { streaming: true },
    });
    expect((await fetch(`${base}/nope`)).status).toBe(404);
    const get = await fetch(`${base}/`);
    expect([get.status, get.headers.get("allow")]).toEqual([405, "POST"]);
  });

  it("answers message/send on / and /a2a with an agent message", async () => {
    for (const path of ["/", "/a2a"]) {
      const { status, body } = await rpc(send({ ...userMessage("hi"), contextId: "ctx1" }, "abc"), path);
      expect(status).toBe(200);
      expect(body).toMatchObject({
        jsonrpc: "2.0",
        id: "abc",
        result: {
          kind: "message",
          role: "agent",
          parts: [{ kind: "text", text: "echo: hi" }],
          contextId: "ctx1",
        },
      });
      const result = body.result as { messageId: string };
      expect(result.messageId).toMatch(/^[0-9a-f-]{36}$/);
    }
    expect(received.at(-1)).toMatchObject({ role: "user", messageId: "m1", contextId: "ctx1" });
  });

  it("answers -32700 to a body that is not JSON", async () => {
    const { status, body } = await rpc("{oops");
    expect(status).toBe(200);
    expect(body).toEqual({ jsonrpc: "2.0", id: null, error: { code: -32700, message: expect.any(String) } });
  });

  it("answers -32600 to requests that are not JSON-RPC 2.0", async () => {
    for (const bad of [
      { id: 1, method: "message/send" },
      { jsonrpc: "1.0", id: 1, method: "message/send" },
      { jsonrpc: "2.0", id: 1, method: 7 },
      { jsonrpc: "2.0", id: { x: 1 }, method: "message/send" },
      [send(userMessage("a"))],
      "null",
      42,
    ]) {
      const { body } = await rpc(typeof bad === "string" ? bad : JSON.stringify(bad));
      expect((body.error as { code: number }).code, JSON.stringify(bad)).toBe(-32600);
    }
    expect((await rpc({ id: 5, method: "x" })).body.id).toBe(5);
  });

  it("answers -32601 to an unknown method, echoing the id", async () => {
    // 0.3 has no tasks/list over JSON-RPC; 1.0's ListTasks is another name.
    for (const method of ["tasks/list", "message/sendd", "sendMessage"]) {
      const { body } = await rpc({ jsonrpc: "2.0", id: 9, method, params: {} });
      expect(body, method).toMatchObject({ id: 9, error: { code: -32601 } });
    }
  });

  it("answers -32602 to invalid message/send params", async () => {
    const cases: unknown[] = [
      undefined,
      { ...userMessage("x"), role: "system" },
      { ...userMessage("x"), parts: [] },
      { ...userMessage("x"), parts: [{ kind: "text" }] },
      { ...userMessage("x"), parts: [{ text: "no kind" }] },
      { ...userMessage("x"), messageId: "" },
      { ...userMessage("x"), contextId: 3 },
    ];
    for (const message of cases) {
      const { body } = await rpc(send(message, 2));
      expect(body, JSON.stringify(message)).toMatchObject({ id: 2, error: { code: -32602 } });
    }
    expect((await rpc({ jsonrpc: "2.0", id: 3, method: "message/send" })).body).toMatchObject({
      error: { code: -32602 },
    });
  });

  it("answers -32603 with a generic message when the handler fails, and logs the cause", async () => {
    for (const text of ["boom", "bad"]) {
      const { body } = await rpc(send(userMessage(text), 4));
      expect(body).toEqual({ jsonrpc: "2.0", id: 4, error: { code: -32603, message: "internal error" } });
    }
    expect(logged.some((l) => l.includes("a2a_handler_failed") && l.includes("hunter2"))).toBe(true);
  });

  it("answers a notification (no id) with 204 and no body", async () => {
    const res = await fetch(base, {
      method: "POST",
      body: JSON.stringify({ jsonrpc: "2.0", method: "message/send", params: { message: userMessage("n") } }),
    });
    expect(res.status).toBe(204);
    expect(await res.text()).toBe("");
    expect(received.at(-1)?.parts).toEqual([{ kind: "text", text: "n" }]);
  });

  it("rejects a body over the cap with 413 and keeps serving", async () => {
    const big = JSON.stringify(send(userMessage("x".repeat(5_000_000))));
    const res = await fetch(base, { method: "POST", body: big });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ error: { code: -32600 } });

    // A chunked body without content-length is cut off as it streams.
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${base}/a2a`, { method: "POST" }, (r) => {
        r.resume();
        resolve(r.statusCode ?? 0);
      });
      req.on("error", reject);
      for (let i = 0; i < 4; i++) req.write("x".repeat(2_000));
      req.end();
    });
    expect(status).toBe(413);

    const justUnder = JSON.stringify(send(userMessage("y".repeat(3_000))));
    expect(justUnder.length).toBeLessThan(4096);
    expect((await rpc(justUnder)).body).toMatchObject({ result: { role: "agent" } });
  });
});

/** A promise the test opens by hand: the handler waits on it, so the test decides when it goes on. */
function gate() {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

describe("A2A server, message/stream", () => {
  const streamLog: string[] = [];
  let streaming: StartedA2AServer;
  let url = "";
  let middle = gate();
  let finished = false;
  let stopped = gate();
  let seen: MessageContext | undefined;
  const produced: string[] = [];

  async function* pieces(text: string, context: MessageContext): AsyncGenerator<ReplyChunk> {
    seen = context;
    try {
      if (text === "fail") {
        yield "partial";
        throw new Error("token sk-live-secret expired");
      }
      yield "one";
      produced.push("one");
      await middle.opened;
      yield " two";
      produced.push("two");
      yield { kind: "data", data: { n: 3 } };
      produced.push("three");
      finished = true;
    } finally {
      stopped.open();
    }
  }

  beforeAll(async () => {
    streaming = await startA2AServer({
      host: "127.0.0.1",
      port: 0,
      card: { name: "streamer" },
      log: (_level, event, fields) => streamLog.push(JSON.stringify({ event, ...fields })),
      onMessage: async (message, context) => {
        const text = messageText(message);
        if (text === "whole") return { parts: [{ kind: "text", text: "all at once" }], metadata: { a: 1 } };
        return pieces(text, context);
      },
    });
    url = `http://127.0.0.1:${streaming.port}/a2a`;
  });
  afterAll(() => streaming.close());

  function post(text: string, method = "message/stream", signal?: AbortSignal) {
    return fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify({ ...send({ ...userMessage(text), contextId: "ctx-s" }, "s1"), method }),
      signal,
    });
  }

  async function open(text: string, signal?: AbortSignal) {
    middle = gate();
    stopped = gate();
    finished = false;
    produced.length = 0;
    const res = await post(text, "message/stream", signal);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    if (!res.body) throw new Error("no body");
    return readEventStream(res.body) as AsyncGenerator<Record<string, unknown>>;
  }

  async function next(events: AsyncGenerator<Record<string, unknown>>) {
    const step = await events.next();
    if (step.done) throw new Error("the stream ended early");
    expect(step.value).toMatchObject({ jsonrpc: "2.0", id: "s1" });
    return step.value.result as Record<string, unknown>;
  }

  it("sends the task, working, each piece as it comes, then completed with final: true", async () => {
    const events = await open("hello");
    const task = await next(events);
    expect(task).toMatchObject({
      kind: "task",
      contextId: "ctx-s",
      status: { state: "submitted" },
      history: [{ kind: "message", role: "user", messageId: "m1", parts: [{ kind: "text", text: "hello" }] }],
    });
    const taskId = task.id as string;
    expect(taskId).toMatch(/^[0-9a-f-]{36}$/);
    expect(await next(events)).toMatchObject({
      kind: "status-update",
      taskId,
      contextId: "ctx-s",
      status: { state: "working" },
      final: false,
    });

    // The handler is held after its first piece: that piece is readable now.
    const first = await next(events);
    expect(first).toMatchObject({
      kind: "artifact-update",
      taskId,
      contextId: "ctx-s",
      append: false,
      artifact: { name: "reply", parts: [{ kind: "text", text: "one" }] },
    });
    expect(produced).toEqual(["one"]);
    expect(finished).toBe(false);
    middle.open();

    const artifactId = (first.artifact as { artifactId: string }).artifactId;
    expect(await next(events)).toMatchObject({
      kind: "artifact-update",
      append: true,
      artifact: { artifactId, parts: [{ kind: "text", text: " two" }] },
    });
    expect(await next(events)).toMatchObject({
      kind: "artifact-update",
      append: true,
      artifact: { artifactId, parts: [{ kind: "data", data: { n: 3 } }] },
    });
    const last = await next(events);
    expect(last).toMatchObject({
      kind: "status-update",
      taskId,
      status: { state: "completed" },
      final: true,
    });
    expect(Date.parse((last.status as { timestamp: string }).timestamp)).not.toBeNaN();
    expect((await events.next()).done).toBe(true);
    expect(finished).toBe(true);
  });

  it("sends a whole reply as one last chunk", async () => {
    const events = await open("whole");
    const kinds: unknown[] = [];
    for await (const event of events) kinds.push((event as { result: unknown }).result);
    expect(kinds).toMatchObject([
      { kind: "task" },
      { kind: "status-update", final: false },
      {
        kind: "artifact-update",
        append: false,
        lastChunk: true,
        artifact: { parts: [{ kind: "text", text: "all at once" }] },
      },
      { kind: "status-update", status: { state: "completed" }, final: true, metadata: { a: 1 } },
    ]);
  });

  it("ends with a JSON-RPC error event when the handler fails mid-stream, and logs the cause", async () => {
    const events = await open("fail");
    const all: Record<string, unknown>[] = [];
    for await (const event of events) all.push(event);
    expect(all.map((e) => (e.result as { kind?: string } | undefined)?.kind ?? "error")).toEqual([
      "task",
      "status-update",
      "artifact-update",
      "error",
    ]);
    expect(all.at(-1)).toEqual({
      jsonrpc: "2.0",
      id: "s1",
      error: { code: -32603, message: "internal error" },
    });
    expect(JSON.stringify(all)).not.toContain("sk-live-secret");
    expect(streamLog.some((l) => l.includes("a2a_handler_failed") && l.includes("sk-live-secret"))).toBe(
      true,
    );
  });

  it("stops the handler when the client goes away", async () => {
    const client = new AbortController();
    const events = await open("hello", client.signal);
    await next(events);
    await next(events);
    expect(await next(events)).toMatchObject({ kind: "artifact-update" });
    client.abort();
    const signal = seen?.signal;
    if (!signal) throw new Error("the handler never ran");
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener("abort", () => resolve());
    });
    // Let the handler go on as if it had not noticed: the server asks for no more pieces after this one.
    middle.open();
    await stopped.opened;
    expect(signal.aborted).toBe(true);
    expect(produced).toEqual(["one"]);
    expect(finished).toBe(false);
  });

  it("serves a streaming handler through message/send as one message, text pieces joined", async () => {
    middle = gate();
    middle.open();
    const res = await post("hello", "message/send");
    expect(await res.json()).toMatchObject({
      jsonrpc: "2.0",
      id: "s1",
      result: {
        kind: "message",
        role: "agent",
        contextId: "ctx-s",
        parts: [
          { kind: "text", text: "one two" },
          { kind: "data", data: { n: 3 } },
        ],
      },
    });
  });

  it("answers bad params and unknown ids as plain JSON-RPC errors, and a notification with 204", async () => {
    const bad = await fetch(url, {
      method: "POST",
      body: JSON.stringify({ jsonrpc: "2.0", id: 8, method: "message/stream", params: {} }),
    });
    expect(bad.headers.get("content-type")).toBe("application/json");
    expect(await bad.json()).toMatchObject({ id: 8, error: { code: -32602 } });

    middle = gate();
    middle.open();
    const note = await fetch(url, {
      method: "POST",
      body: JSON.stringify({
        jsonrpc: "2.0",
        method: "message/stream",
        params: { message: userMessage("n") },
      }),
    });
    expect([note.status, await note.text()]).toEqual([204, ""]);
  });
});

describe("A2A server behind the platform (inbound token)", () => {
  let auth: InboundAuth = "pending";
  const handled: string[] = [];
  let guarded: StartedA2AServer;
  let url = "";
  beforeAll(async () => {
    guarded = await startA2AServer({
      host: "127.0.0.1",
      port: 0,
      card: { name: "guarded" },
      inbound: () => auth,
      onMessage: async (message) => {
        handled.push(messageText(message));
        return { parts: [{ kind: "text", text: `echo: ${messageText(message)}` }] };
      },
    });
    url = `http://127.0.0.1:${guarded.port}`;
  });
  afterAll(() => guarded.close());

  const call = (text: string, headers: Record<string, string> = {}, path = "/") =>
    fetch(`${url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(send(userMessage(text))),
    });

  it("answers 503 with Retry-After while it has no credentials, and serves the card and health", async () => {
    auth = "pending";
    const res = await call("early");
    expect([res.status, res.headers.get("retry-after")]).toEqual([503, "5"]);
    expect((await fetch(`${url}/.well-known/agent.json`)).status).toBe(200);
    expect((await fetch(`${url}/health`)).status).toBe(200);
    expect(handled).toEqual([]);
  });

  it("answers 401 without the token or with another, on both paths, without running the handler", async () => {
    auth = { token: "in_the-right-one" };
    for (const path of ["/", "/a2a"]) {
      for (const headers of <Record<string, string>[]>[
        {},
        { [INBOUND_TOKEN_HEADER]: "in_the-wrong-one" },
        { [INBOUND_TOKEN_HEADER]: "in_the-right-on" },
        { [INBOUND_TOKEN_HEADER]: "in_the-right-one-and-more" },
        { authorization: "Bearer in_the-right-one" },
      ]) {
        const res = await call("sneak", headers, path);
        expect(res.status, JSON.stringify(headers)).toBe(401);
        expect(await res.json()).toMatchObject({ jsonrpc: "2.0", id: null, error: { code: -32600 } });
      }
    }
    // Refused before the body is read: a body far over the cap is still a 401, not a 413.
    const big = await fetch(url, { method: "POST", body: "x".repeat(2 * DEFAULT_MAX_BODY_BYTES) });
    expect(big.status).toBe(401);
    expect(handled).toEqual([]);
    expect((await fetch(`${url}/.well-known/agent-card.json`)).status).toBe(200);
  });

  it("serves a request with the token, and follows a new token at once", async () => {
    auth = { token: "in_the-right-one" };
    const ok = await call("hello", { [INBOUND_TOKEN_HEADER]: "in_the-right-one" });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ result: { parts: [{ text: "echo: hello" }] } });

    auth = { token: "in_rotated" };
    expect((await call("stale", { [INBOUND_TOKEN_HEADER]: "in_the-right-one" })).status).toBe(401);
    expect((await call("fresh", { [INBOUND_TOKEN_HEADER]: "in_rotated" })).status).toBe(200);
    expect(handled).toEqual(["hello", "fresh"]);
  });
});

describe("readEventStream", () => {
  it("reads events split across chunks, skipping comments and other fields", async () => {
    const text = ': hello\nevent: x\ndata: {"a":\ndata: 1}\n\nid: 2\r\ndata: [2]\r\n\r\ndata: "last"';
    const bytes = new TextEncoder().encode(text);
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 5) controller.enqueue(bytes.slice(i, i + 5));
        controller.close();
      },
    });
    const values: unknown[] = [];
    for await (const value of readEventStream(body)) values.push(value);
    expect(values).toEqual([{ a: 1 }, [2], "last"]);
  });
});

describe("messageText", () => {
  it("joins the text parts and skips the others", () => {
    expect(
      messageText({
        parts: [
          { kind: "text", text: "a" },
          { kind: "data", data: { x: 1 } },
          { kind: "text", text: "b" },
        ],
      }),
    ).toBe("a\nb");
  });
});

describe("A2A server, tasks over raw JSON-RPC", () => {
  let tasks: StartedA2AServer;
  let url = "";
  let release = gate();
  beforeAll(async () => {
    tasks = await startA2AServer({
      host: "127.0.0.1",
      port: 0,
      card: { name: "tasks" },
      onMessage: (message) =>
        asTask(
          (async function* () {
            yield "begun";
            await release.opened;
            yield ` then ${messageText(message)}`;
          })(),
        ),
    });
    url = `http://127.0.0.1:${tasks.port}/`;
  });
  afterAll(() => tasks.close());

  const call = (method: string, params: unknown, signal?: AbortSignal) =>
    fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: "r", method, params }),
      signal,
    });

  it("answers 0.3 tasks/resubscribe as an event stream even for an error, 1.0 SubscribeToTask as JSON", async () => {
    const legacy = await call("tasks/resubscribe", { id: "missing" });
    expect(legacy.headers.get("content-type")).toBe("text/event-stream");
    if (!legacy.body) throw new Error("no body");
    const events: unknown[] = [];
    for await (const event of readEventStream(legacy.body)) events.push(event);
    expect(events).toMatchObject([{ id: "r", error: { code: -32001 } }]);

    const current = await call("SubscribeToTask", { id: "missing" });
    expect(current.headers.get("content-type")).toBe("application/json");
    expect(await current.json()).toMatchObject({ id: "r", error: { code: -32001 } });
  });

  it("keeps a task run by asTask going when its streaming client leaves; it ends completed", async () => {
    release = gate();
    let closedEarly = 0;
    tasks.server.prependListener("request", (_req, response) =>
      response.on("close", () => {
        if (!response.writableFinished) closedEarly++;
      }),
    );
    const client = new AbortController();
    const res = await call(
      "message/stream",
      { message: { role: "user", messageId: "m", parts: [{ kind: "text", text: "left" }] } },
      client.signal,
    );
    if (!res.body) throw new Error("no body");
    const events = readEventStream(res.body);
    const first = (await events.next()).value as { result: { id: string } };
    const taskId = first.result.id;
    client.abort();
    await events.return(undefined);
    // Only once the server has seen the client go does the handler go on.
    await expect.poll(() => closedEarly).toBe(1);
    release.open();
    await expect
      .poll(
        async () => ((await (await call("tasks/get", { id: taskId })).json()) as { result: A2ATask }).result,
      )
      .toMatchObject({
        status: { state: "completed" },
        artifacts: [{ parts: [{ kind: "text", text: "begun then left" }] }],
      });
  });

  it("runs a notification to tasks/cancel and answers 204", async () => {
    release = gate();
    const started = (await (
      await call("message/send", {
        message: { role: "user", messageId: "m", parts: [{ kind: "text", text: "x" }] },
        configuration: { blocking: false },
      })
    ).json()) as { result: A2ATask };
    expect(started.result.status.state).toBe("working");
    const note = await fetch(url, {
      method: "POST",
      body: JSON.stringify({ jsonrpc: "2.0", method: "tasks/cancel", params: { id: started.result.id } }),
    });
    expect([note.status, await note.text()]).toEqual([204, ""]);
    const got = (await (await call("tasks/get", { id: started.result.id })).json()) as { result: A2ATask };
    expect(got.result.status.state).toBe("canceled");
  });
});

import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type A2AMessage, messageText, type StartedA2AServer, startA2AServer } from "./a2a-server.ts";

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
    expect(await card.json()).toEqual({ name: "echo", version: "1.0.0", url: base });
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
    const { body } = await rpc({ jsonrpc: "2.0", id: 9, method: "tasks/get", params: {} });
    expect(body).toMatchObject({ id: 9, error: { code: -32601 } });
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

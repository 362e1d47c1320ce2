/**
 * The protocol's official JavaScript SDK as a server beside ours: the same agent behind its request handler
 * (`DefaultRequestHandler` with its 1.0 and 0.3 JSON-RPC transport handlers, served here on node:http as its Express
 * adapter serves them, `testing/official-reference.ts`) and behind `startA2AServer`, asked the same requests in both
 * versions. Ids and timestamps aside, the answers must be the same JSON; errors must carry the same codes.
 */
import type { Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asTask } from "./a2a-handler.ts";
import { messageText } from "./a2a-protocol.ts";
import { type StartedA2AServer, startA2AServer } from "./a2a-server.ts";
import { readEventStream } from "./event-stream.ts";
import { startReference } from "./testing/official-reference.ts";

let ours: StartedA2AServer;
let oursUrl = "";
let reference: { server: Server; url: string };

beforeAll(async () => {
  ours = await startA2AServer({
    host: "127.0.0.1",
    port: 0,
    card: { name: "ours" },
    onMessage: (message) => {
      const text = messageText(message);
      if (text.startsWith("task:"))
        return asTask({ parts: [{ kind: "text", text: `done:${text.slice(5)}` }] });
      return { parts: [{ kind: "text", text: `echo: ${text}` }] };
    },
  });
  oursUrl = `http://127.0.0.1:${ours.port}/`;
  reference = await startReference();
});
afterAll(async () => {
  await ours.close();
  await new Promise((resolve) => reference.server.close(resolve));
});

/** Ids and timestamps replaced by what they are, so two servers' answers compare. */
function normalized(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalized);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.entries(value).map(([key, v]) => {
      if (
        ["id", "taskId", "contextId", "messageId", "artifactId"].includes(key) &&
        typeof v === "string" &&
        v !== ""
      )
        return [key, "<id>"];
      if (key === "timestamp") return [key, "<time>"];
      if (key === "message" && typeof v === "string") return [key, "<text>"];
      return [key, normalized(v)];
    }),
  );
}

async function ask(url: string, body: unknown, version?: string): Promise<unknown> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...(version ? { "A2A-Version": version } : {}) },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  if (res.headers.get("content-type")?.startsWith("text/event-stream") && res.body) {
    const events: unknown[] = [];
    for await (const event of readEventStream(res.body)) events.push(event);
    return events;
  }
  return res.json();
}

/** Both servers' answers to the same request (a function gets each server's own earlier answer). */
type Request = Record<string, unknown> | string | ((own: unknown) => Record<string, unknown>);

async function both(request: Request, version?: string, previous?: [unknown, unknown]) {
  const build = (i: 0 | 1) => (typeof request === "function" ? request(previous?.[i]) : request);
  const mine = await ask(oursUrl, build(0), version);
  const theirs = await ask(reference.url, build(1), version);
  return [mine, theirs] as [unknown, unknown];
}

const v1Send = (text: string, method = "SendMessage") => ({
  jsonrpc: "2.0",
  id: 1,
  method,
  params: { message: { messageId: "m-1", role: "ROLE_USER", parts: [{ text }] } },
});
const v03Send = (text: string, method = "message/send") => ({
  jsonrpc: "2.0",
  id: "a",
  method,
  params: { message: { kind: "message", messageId: "m-1", role: "user", parts: [{ kind: "text", text }] } },
});

describe.each([
  ["1.0", v1Send, "SendStreamingMessage", "GetTask", "CancelTask"],
  ["0.3", v03Send, "message/stream", "tasks/get", "tasks/cancel"],
] as const)("A2A %s: the official SDK's server and ours answer alike", (version, sendBody, stream, get, cancel) => {
  const header = version === "1.0" ? "1.0" : undefined;
  const resultId = (answer: unknown) => {
    const result = (answer as { result: Record<string, unknown> }).result;
    return ((result.task as { id?: string } | undefined)?.id ?? result.id) as string;
  };

  it("a direct answer", async () => {
    const [mine, theirs] = await both(sendBody("hi"), header);
    expect(normalized(mine)).toEqual(normalized(theirs));
  });

  it("a reply run as a task, then fetched, with historyLength, then canceled once completed", async () => {
    const sent = await both(sendBody("task: build"), header);
    expect(normalized(sent[0])).toEqual(normalized(sent[1]));
    for (const historyLength of [undefined, 0]) {
      const params = (own: unknown) => ({
        id: resultId(own),
        ...(historyLength === undefined ? {} : { historyLength }),
      });
      const fetched = await both(
        (own) => ({ jsonrpc: "2.0", id: 2, method: get, params: params(own) }),
        header,
        sent,
      );
      expect(normalized(fetched[0])).toEqual(normalized(fetched[1]));
    }
    const refused = await both(
      (own) => ({ jsonrpc: "2.0", id: 3, method: cancel, params: { id: resultId(own) } }),
      header,
      sent,
    );
    expect(normalized(refused[0])).toMatchObject({ id: 3, error: { code: -32002 } });
    expect((refused[0] as { error: { data?: unknown } }).error.data).toEqual(
      (refused[1] as { error: { data?: unknown } }).error.data,
    );
    expect((refused[1] as { error: { code: number } }).error.code).toBe(-32002);
  });

  it("a stream", async () => {
    const [mine, theirs] = await both(sendBody("task: streamed", stream), header);
    expect(normalized(mine)).toEqual(normalized(theirs));
  });

  it("an unknown task", async () => {
    const [mine, theirs] = await both({ jsonrpc: "2.0", id: 4, method: get, params: { id: "nope" } }, header);
    expect(normalized(mine)).toEqual(normalized(theirs));
  });

  it("malformed envelopes and params", async () => {
    // Where the official SDK's 1.0 handler answers an envelope that is not JSON-RPC 2.0 with -32602 (it reports
    // every malformed request as its RequestMalformedError), this server keeps to JSON-RPC's -32600, as the SDK's 0.3
    // handler does.
    const notJsonRpc2 = { jsonrpc: "1.0", id: 6, method: get, params: { id: "x" } };
    const [mine, theirs] = await both(notJsonRpc2, header);
    expect(mine).toMatchObject({ id: 6, error: { code: -32600 } });
    expect(theirs).toMatchObject({ id: 6, error: { code: version === "1.0" ? -32602 : -32600 } });
    for (const body of [
      { jsonrpc: "2.0", id: 5, method: 7 },
      { jsonrpc: "2.0", id: 7, method: "no/such", params: {} },
      { jsonrpc: "2.0", id: 8, method: get, params: "x" },
      "{oops",
    ]) {
      const [mine, theirs] = await both(body, header);
      const codes = [mine, theirs].map((a) => (a as { id: unknown; error?: { code: number } }).error?.code);
      expect(codes[0], JSON.stringify(body)).toBe(codes[1]);
      expect((mine as { id: unknown }).id).toEqual((theirs as { id: unknown }).id);
    }
  });
});

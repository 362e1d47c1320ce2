/**
 * The protocol's official JavaScript SDK as a server beside ours: the same agent behind its request handler
 * (`DefaultRequestHandler` with its 1.0 and 0.3 JSON-RPC transport handlers, served here on node:http as its Express
 * adapter serves them) and behind `startA2AServer`, asked the same requests in both versions. Ids and timestamps
 * aside, the answers must be the same JSON; errors must carry the same codes.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { type Message, Role, type Task, TaskState } from "@a2a-js/sdk";
import { isV1JsonRpcMethod } from "@a2a-js/sdk/compat/v0_3";
import { LegacyJsonRpcTransportHandler } from "@a2a-js/sdk/compat/v0_3/server";
import {
  AgentEvent,
  type AgentExecutor,
  DefaultRequestHandler,
  InMemoryTaskStore,
  JsonRpcTransportHandler,
  ServerCallContext,
} from "@a2a-js/sdk/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asTask } from "./a2a-handler.ts";
import { messageText } from "./a2a-protocol.ts";
import { type StartedA2AServer, startA2AServer } from "./a2a-server.ts";
import { readEventStream } from "./event-stream.ts";

const textPart = (value: string) => ({
  content: { $case: "text" as const, value },
  metadata: undefined,
  filename: "",
  mediaType: "",
});

/** The agent, as the official SDK's executor: `task: X` runs as a task answering `done: X`, the rest is echoed. */
const executor: AgentExecutor = {
  async execute(context, bus) {
    const text = context.userMessage.parts
      .map((p) => (p.content?.$case === "text" ? p.content.value : ""))
      .join("");
    const { taskId, contextId } = context;
    const now = () => new Date().toISOString();
    if (!text.startsWith("task:")) {
      const reply: Message = {
        messageId: crypto.randomUUID(),
        contextId,
        taskId: "",
        role: Role.ROLE_AGENT,
        parts: [textPart(`echo: ${text}`)],
        metadata: undefined,
        extensions: [],
        referenceTaskIds: [],
      };
      bus.publish(AgentEvent.message(reply));
      bus.finished();
      return;
    }
    const task: Task = {
      id: taskId,
      contextId,
      status: { state: TaskState.TASK_STATE_SUBMITTED, timestamp: now(), message: undefined },
      artifacts: [],
      history: [context.userMessage],
      metadata: undefined,
    };
    bus.publish(AgentEvent.task(task));
    const status = (state: TaskState) => ({
      taskId,
      contextId,
      status: { state, timestamp: now(), message: undefined },
      metadata: undefined,
    });
    bus.publish(AgentEvent.statusUpdate(status(TaskState.TASK_STATE_WORKING)));
    bus.publish(
      AgentEvent.artifactUpdate({
        taskId,
        contextId,
        artifact: {
          artifactId: crypto.randomUUID(),
          name: "reply",
          description: "",
          parts: [textPart(`done:${text.slice(5)}`)],
          metadata: undefined,
          extensions: [],
        },
        append: false,
        lastChunk: true,
        metadata: undefined,
      }),
    );
    bus.publish(AgentEvent.statusUpdate(status(TaskState.TASK_STATE_COMPLETED)));
    bus.finished();
  },
  async cancelTask() {},
};

/** The official SDK's request handler on node:http, framed as its Express JSON-RPC adapter frames it. */
async function startReference(): Promise<{ server: Server; url: string }> {
  let url = "";
  const card = {
    name: "reference",
    description: "",
    version: "1.0.0",
    supportedInterfaces: ["1.0", "0.3"].map((protocolVersion) => ({
      url: "",
      protocolBinding: "JSONRPC",
      tenant: "",
      protocolVersion,
    })),
    provider: undefined,
    capabilities: { streaming: true, pushNotifications: false, extensions: [] },
    securitySchemes: {},
    securityRequirements: [],
    defaultInputModes: ["text/plain"],
    defaultOutputModes: ["text/plain"],
    skills: [],
    signatures: [],
  };
  const handler = new DefaultRequestHandler(card, new InMemoryTaskStore(), executor);
  const v1 = new JsonRpcTransportHandler(handler);
  const v03 = new LegacyJsonRpcTransportHandler(handler);
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    let body: unknown;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          jsonrpc: "2.0",
          id: null,
          error: { code: -32700, message: "Invalid JSON payload." },
        }),
      );
      return;
    }
    const method = (body as { method?: unknown } | null)?.method;
    const header = req.headers["a2a-version"];
    const context = new ServerCallContext(typeof header === "string" ? { requestedVersion: header } : {});
    const answer = await (isV1JsonRpcMethod(method) ? v1 : v03).handle(
      body as Record<string, unknown>,
      context,
    );
    if (Symbol.asyncIterator in (answer as object)) {
      res.writeHead(200, { "content-type": "text/event-stream" });
      try {
        for await (const event of answer as AsyncGenerator<unknown>)
          res.write(`data: ${JSON.stringify(event)}\n\n`);
      } catch (err) {
        const error = isV1JsonRpcMethod(method)
          ? JsonRpcTransportHandler.mapToJSONRPCError(err)
          : LegacyJsonRpcTransportHandler.mapToLegacyJSONRPCError(err);
        res.write(
          `data: ${JSON.stringify({ jsonrpc: "2.0", id: (body as { id?: unknown }).id ?? null, error })}\n\n`,
        );
      }
      res.end();
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(answer));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  return { server, url };
}

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

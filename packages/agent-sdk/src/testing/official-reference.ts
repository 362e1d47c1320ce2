/**
 * The protocol's official JavaScript SDK as an A2A server, for tests: its request handler (`DefaultRequestHandler`
 * with its 1.0 and 0.3 JSON-RPC transport handlers) on node:http, framed as its Express adapter frames it, in front
 * of one agent: `task: X` runs as a task answering `done: X`, the rest is echoed. Uses `@a2a-js/sdk`, a dev
 * dependency: import it from tests only.
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
export async function startReference(): Promise<{ server: Server; url: string }> {
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

/**
 * A tiny A2A server on node:http: JSON-RPC 2.0 `message/send` and `message/stream` on `POST /` and `POST /a2a`, the
 * agent card on `GET /.well-known/agent-card.json`, and `GET /health`. Handler failures answer a generic JSON-RPC
 * error; the handler's own error text is logged, never sent.
 *
 * `message/stream` answers `text/event-stream`: each `data:` line is a JSON-RPC response whose result is, in order,
 * the task (`submitted`), a `working` status update, one artifact update per piece of the reply (the first with
 * `append: false`, the rest appended to the same artifact), and a `completed` status update with `final: true`.
 * A handler that fails mid-stream ends the stream with a JSON-RPC error event instead.
 *
 * Behind the platform, JSON-RPC is for the platform's A2A proxy only: given an inbound token (`inbound`), the server
 * answers 401 to a request without it in `x-molecule-inbound-token`, before reading its body. The agent card and
 * `/health` stay public.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { INBOUND_TOKEN_HEADER } from "@molecule/contracts/inbound";
import { secretsEqual } from "@molecule/identity/tokens";
import type { AgentCard } from "./client.ts";
import { errorFields, type Logger, silentLogger } from "./log.ts";

export type TextPart = { kind: "text"; text: string; metadata?: Record<string, unknown> };
/** Other part kinds (file, data) pass through untouched. */
export type OtherPart = { kind: string; [field: string]: unknown };
export type Part = TextPart | OtherPart;

export interface A2AMessage {
  kind?: "message";
  role: "user" | "agent";
  parts: Part[];
  messageId: string;
  contextId?: string;
  taskId?: string;
  metadata?: Record<string, unknown>;
}

/** What a handler returns: at least the parts; the server fills kind, role, messageId and contextId. */
export interface AgentReply {
  parts: Part[];
  messageId?: string;
  contextId?: string;
  metadata?: Record<string, unknown>;
}

export interface MessageContext {
  /** Aborted when the client disconnects or the server closes. */
  signal: AbortSignal;
  /** The JSON-RPC request id. */
  requestId: string | number | null;
}

/** One piece of a streamed reply: text (consecutive pieces join into one text part) or a whole part. */
export type ReplyChunk = string | Part;

/** A whole reply, or its pieces as they become ready (e.g. an async generator of text). */
export type HandlerResult = AgentReply | AsyncIterable<ReplyChunk>;

/**
 * Answers one message. Either kind of result serves both methods: `message/send` waits for all the pieces,
 * `message/stream` sends each piece as it comes (a whole reply is one artifact update). A handler should stop when
 * `context.signal` aborts; a streamed one is also not asked for more pieces once the client is gone.
 */
export type MessageHandler = (
  message: A2AMessage,
  context: MessageContext,
) => HandlerResult | Promise<HandlerResult>;

export type TaskState = "submitted" | "working" | "completed";

export interface TaskStatus {
  state: TaskState;
  timestamp: string;
}

/** The first event of a stream. */
export interface TaskEvent {
  kind: "task";
  id: string;
  contextId: string;
  status: TaskStatus;
  history: A2AMessage[];
}

export interface TaskStatusUpdateEvent {
  kind: "status-update";
  taskId: string;
  contextId: string;
  status: TaskStatus;
  /** True on the last event of the stream. */
  final: boolean;
  metadata?: Record<string, unknown>;
}

export interface TaskArtifactUpdateEvent {
  kind: "artifact-update";
  taskId: string;
  contextId: string;
  artifact: { artifactId: string; name: string; parts: Part[] };
  /** False for the first piece; true when the parts add to the artifact sent before. */
  append: boolean;
  /** Set on a whole reply, sent in one piece. */
  lastChunk?: boolean;
}

export type StreamEvent = TaskEvent | TaskStatusUpdateEvent | TaskArtifactUpdateEvent;

export const JSONRPC_ERRORS = {
  parseError: -32700,
  invalidRequest: -32600,
  methodNotFound: -32601,
  invalidParams: -32602,
  internalError: -32603,
} as const;

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/**
 * Who may send JSON-RPC: `{ token }` only requests carrying that token in `x-molecule-inbound-token` (the platform's
 * proxy; others get 401); `"pending"` nobody yet (503, while the agent is getting its credentials); `"open"` anyone,
 * for a server that is not behind the platform (or a platform that issues no inbound tokens).
 */
export type InboundAuth = { token: string } | "pending" | "open";

export interface A2AServerOptions {
  card: AgentCard | (() => AgentCard);
  onMessage: MessageHandler;
  /** Default "open". A function is asked on every request, so the token can arrive or change while serving. */
  inbound?: InboundAuth | (() => InboundAuth);
  /** Requests with a larger body answer 413. Default 1 MiB. */
  maxBodyBytes?: number;
  log?: Logger;
}

type JsonRpcId = string | number | null;

/** Builds the server without listening; see `startA2AServer`. */
export function createA2AServer(options: A2AServerOptions): Server {
  const log = options.log ?? silentLogger;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const card = typeof options.card === "function" ? options.card : () => options.card as AgentCard;
  const inboundOption = options.inbound ?? "open";
  const inbound = typeof inboundOption === "function" ? inboundOption : () => inboundOption;
  const closing = new AbortController();

  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (
      req.method === "GET" &&
      (path === "/.well-known/agent-card.json" || path === "/.well-known/agent.json")
    ) {
      return sendJson(res, 200, card());
    }
    if (req.method === "GET" && path === "/health") return sendJson(res, 200, { ok: true });
    if (path === "/" || path === "/a2a") {
      if (req.method !== "POST") {
        res.setHeader("allow", "POST");
        return sendJson(res, 405, rpcError(null, JSONRPC_ERRORS.invalidRequest, "use POST for JSON-RPC"));
      }
      const refusal = checkInbound(req, inbound());
      if (refusal) {
        log("warn", "a2a_refused", { status: refusal.status, remoteAddress: req.socket.remoteAddress });
        return refuse(req, res, refusal.status, refusal.message, refusal.headers);
      }
      handleRpc(req, res, { ...options, maxBodyBytes, log, closing: closing.signal }).catch(
        (err: unknown) => {
          log("error", "a2a_request_failed", errorFields(err));
          if (!res.headersSent)
            sendJson(res, 500, rpcError(null, JSONRPC_ERRORS.internalError, "internal error"));
          else res.destroy();
        },
      );
      return;
    }
    sendJson(res, 404, { error: { code: "not_found", message: "no such route" } });
  });
  server.requestTimeout = 60_000;
  server.headersTimeout = 15_000;
  server.on("close", () => closing.abort());
  return server;
}

export interface StartedA2AServer {
  server: Server;
  /** The port actually bound (useful with port 0). */
  port: number;
  host: string;
  /** Stops accepting, lets in-flight requests finish, then drops what remains after `graceMs` (default 5 s). */
  close(graceMs?: number): Promise<void>;
}

export async function startA2AServer(
  options: A2AServerOptions & { port: number; host: string },
): Promise<StartedA2AServer> {
  const server = createA2AServer(options);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    port,
    host: options.host,
    close: (graceMs = 5_000) =>
      new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}

interface RpcContext extends A2AServerOptions {
  maxBodyBytes: number;
  log: Logger;
  closing: AbortSignal;
}

async function handleRpc(req: IncomingMessage, res: ServerResponse, ctx: RpcContext): Promise<void> {
  const declared = Number(req.headers["content-length"]);
  const body =
    Number.isFinite(declared) && declared > ctx.maxBodyBytes ? null : await readBody(req, ctx.maxBodyBytes);
  if (body === null) return tooLarge(req, res, ctx.maxBodyBytes);

  let payload: unknown;
  try {
    payload = JSON.parse(body.toString("utf8"));
  } catch {
    return sendJson(
      res,
      200,
      rpcError(null, JSONRPC_ERRORS.parseError, "parse error: body is not valid JSON"),
    );
  }
  if (Array.isArray(payload)) {
    return sendJson(
      res,
      200,
      rpcError(null, JSONRPC_ERRORS.invalidRequest, "batch requests are not supported"),
    );
  }
  const request = asRecord(payload);
  const rawId = request?.id;
  const idValid =
    rawId === undefined || rawId === null || typeof rawId === "string" || typeof rawId === "number";
  const id: JsonRpcId = idValid && rawId !== undefined ? (rawId as JsonRpcId) : null;
  if (!request || request.jsonrpc !== "2.0" || typeof request.method !== "string" || !idValid) {
    return sendJson(res, 200, rpcError(id, JSONRPC_ERRORS.invalidRequest, "invalid JSON-RPC 2.0 request"));
  }
  const isNotification = rawId === undefined;

  const method = request.method;
  if (method !== "message/send" && method !== "message/stream") {
    return sendJson(res, 200, rpcError(id, JSONRPC_ERRORS.methodNotFound, `method not found: ${method}`));
  }
  const checked = parseSendParams(request.params);
  if (typeof checked === "string") {
    return sendJson(res, 200, rpcError(id, JSONRPC_ERRORS.invalidParams, `invalid params: ${checked}`));
  }

  const disconnected = new AbortController();
  res.on("close", () => {
    if (!res.writableFinished) disconnected.abort();
  });
  const signal = AbortSignal.any([disconnected.signal, ctx.closing]);
  // A notification has no answer to stream: it runs like message/send and gets 204.
  if (method === "message/stream" && !isNotification) {
    return streamReply(res, { id, message: checked, signal }, ctx);
  }

  const { parts, add } = partsBuilder();
  let reply: HandlerResult;
  try {
    reply = await ctx.onMessage(checked, { signal, requestId: id });
    for await (const piece of pieces(reply)) {
      if (signal.aborted) break;
      add(piece);
    }
  } catch (err) {
    if (signal.aborted) return;
    ctx.log("error", "a2a_handler_failed", { method, ...errorFields(err) });
    return sendJson(res, 200, rpcError(id, JSONRPC_ERRORS.internalError, "internal error"));
  }
  if (signal.aborted) return;
  if (isNotification) {
    res.writeHead(204).end();
    return;
  }
  const whole = isAgentReply(reply) ? reply : { parts };
  const result = {
    kind: "message" as const,
    role: "agent" as const,
    parts,
    messageId: whole.messageId ?? randomUUID(),
    ...((whole.contextId ?? checked.contextId) ? { contextId: whole.contextId ?? checked.contextId } : {}),
    ...(checked.taskId ? { taskId: checked.taskId } : {}),
    ...(whole.metadata ? { metadata: whole.metadata } : {}),
  };
  sendJson(res, 200, { jsonrpc: "2.0", id, result });
}

/** Answers `message/stream`: the task, `working`, one artifact update per piece, then `completed` (final). */
async function streamReply(
  res: ServerResponse,
  call: { id: JsonRpcId; message: A2AMessage; signal: AbortSignal },
  ctx: RpcContext,
): Promise<void> {
  const { id, message, signal } = call;
  const taskId = message.taskId ?? randomUUID();
  const contextId = message.contextId ?? randomUUID();
  const artifactId = randomUUID();
  const status = (state: TaskState): TaskStatus => ({ state, timestamp: new Date().toISOString() });
  const send = (result: StreamEvent) => writeEvent(res, { jsonrpc: "2.0", id, result });

  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  await send({
    kind: "task",
    id: taskId,
    contextId,
    status: status("submitted"),
    history: [{ ...message, kind: "message", taskId, contextId }],
  });
  await send({ kind: "status-update", taskId, contextId, status: status("working"), final: false });

  let sent = 0;
  let metadata: Record<string, unknown> | undefined;
  try {
    const reply = await ctx.onMessage(message, { signal, requestId: id });
    const whole = isAgentReply(reply);
    if (whole) metadata = reply.metadata;
    for await (const piece of pieces(reply)) {
      if (signal.aborted) break;
      await send({
        kind: "artifact-update",
        taskId,
        contextId,
        artifact: { artifactId, name: "reply", parts: partsBuilder().add(piece) },
        append: sent > 0,
        ...(whole ? { lastChunk: true } : {}),
      });
      sent++;
    }
  } catch (err) {
    if (!signal.aborted) {
      ctx.log("error", "a2a_handler_failed", { method: "message/stream", ...errorFields(err) });
      await writeEvent(res, rpcError(id, JSONRPC_ERRORS.internalError, "internal error"));
      res.end();
      return;
    }
  }
  if (signal.aborted) {
    ctx.log("info", "a2a_stream_abandoned", { sent });
    return;
  }
  await send({
    kind: "status-update",
    taskId,
    contextId,
    status: status("completed"),
    final: true,
    ...(metadata ? { metadata } : {}),
  });
  res.end();
}

function isAgentReply(result: HandlerResult): result is AgentReply {
  return !(result !== null && typeof result === "object" && Symbol.asyncIterator in result);
}

/** The reply as pieces: a whole reply is one piece (all its parts), a streamed one yields its own. */
async function* pieces(result: HandlerResult): AsyncIterable<ReplyChunk | Part[]> {
  if (isAgentReply(result)) {
    if (!result || !Array.isArray(result.parts)) throw new TypeError("handler returned no parts");
    if (result.parts.length > 0) yield result.parts;
    return;
  }
  yield* result;
}

/** Collects pieces into parts: consecutive text pieces join into one text part; parts are kept as they are. */
function partsBuilder(): { parts: Part[]; add(piece: ReplyChunk | Part[]): Part[] } {
  const parts: Part[] = [];
  let openText: TextPart | null = null;
  return {
    parts,
    add(piece) {
      if (typeof piece === "string") {
        if (openText) openText.text += piece;
        else {
          openText = { kind: "text", text: piece };
          parts.push(openText);
        }
        return parts;
      }
      openText = null;
      for (const part of Array.isArray(piece) ? piece : [piece]) {
        if (part === null || typeof part !== "object" || typeof part.kind !== "string") {
          throw new TypeError("handler gave something that is neither text nor a part");
        }
        parts.push(part);
      }
      return parts;
    },
  };
}

/** Writes one server-sent event; waits while the client is slow to read, returns at once once it is gone. */
async function writeEvent(res: ServerResponse, payload: unknown): Promise<void> {
  if (res.destroyed) return;
  if (res.write(`data: ${JSON.stringify(payload)}\n\n`)) return;
  await new Promise<void>((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}

/** The validated message, or a string saying what is wrong. */
function parseSendParams(params: unknown): A2AMessage | string {
  const message = asRecord(asRecord(params)?.message);
  if (!message) return "params.message must be an object";
  if (message.role !== "user" && message.role !== "agent") return 'message.role must be "user" or "agent"';
  if (typeof message.messageId !== "string" || message.messageId === "") {
    return "message.messageId must be a non-empty string";
  }
  if (!Array.isArray(message.parts) || message.parts.length === 0)
    return "message.parts must be a non-empty array";
  for (const [i, part] of message.parts.entries()) {
    const p = asRecord(part);
    if (!p || typeof p.kind !== "string") return `message.parts[${i}].kind must be a string`;
    if (p.kind === "text" && typeof p.text !== "string") return `message.parts[${i}].text must be a string`;
  }
  for (const key of ["contextId", "taskId"] as const) {
    if (message[key] !== undefined && typeof message[key] !== "string")
      return `message.${key} must be a string`;
  }
  return message as unknown as A2AMessage;
}

/** All text parts of a message joined with newlines. */
export function messageText(message: Pick<A2AMessage, "parts">): string {
  return message.parts
    .filter((p): p is TextPart => p.kind === "text" && typeof (p as TextPart).text === "string")
    .map((p) => p.text)
    .join("\n");
}

/** The whole body, or null as soon as it exceeds `max` bytes (the rest is then discarded as it arrives). */
function readBody(req: IncomingMessage, max: number): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    req.on("data", (chunk: Buffer) => {
      if (settled) return;
      size += chunk.length;
      if (size > max) {
        settled = true;
        chunks.length = 0;
        resolve(null);
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!settled) resolve(Buffer.concat(chunks));
      settled = true;
    });
    req.on("error", (err) => {
      if (!settled) reject(err);
      settled = true;
    });
  });
}

/** Seconds a caller is asked to wait while the agent is still getting its credentials. */
const PENDING_RETRY_AFTER_SECONDS = 5;

/** Why a JSON-RPC request may not be served, or null when it may. */
function checkInbound(
  req: IncomingMessage,
  auth: InboundAuth,
): { status: number; message: string; headers?: Record<string, string> } | null {
  if (auth === "open") return null;
  if (auth === "pending") {
    return {
      status: 503,
      message: "the agent is not registered with its platform yet",
      headers: { "retry-after": String(PENDING_RETRY_AFTER_SECONDS) },
    };
  }
  const presented = req.headers[INBOUND_TOKEN_HEADER];
  if (typeof presented === "string" && secretsEqual(presented, auth.token)) return null;
  return {
    status: 401,
    message: `${INBOUND_TOKEN_HEADER} missing or wrong: this agent answers only through its platform's A2A proxy`,
  };
}

/**
 * Answers without reading the body and closes the connection; what the client still sends is drained, never
 * buffered, for a short while.
 */
function refuse(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  message: string,
  headers: Record<string, string> = {},
): void {
  req.resume();
  const drainLimit = setTimeout(() => req.socket.destroy(), 2_000);
  drainLimit.unref();
  req.once("end", () => clearTimeout(drainLimit));
  res.setHeader("connection", "close");
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  sendJson(res, status, rpcError(null, JSONRPC_ERRORS.invalidRequest, message));
}

function tooLarge(req: IncomingMessage, res: ServerResponse, max: number): void {
  refuse(req, res, 413, `request body exceeds ${max} bytes`);
}

function rpcError(id: JsonRpcId, code: number, message: string) {
  return { jsonrpc: "2.0" as const, id, error: { code, message } };
}

function asRecord(value: unknown): Record<string, unknown> | null {
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : null;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

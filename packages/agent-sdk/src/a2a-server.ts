/**
 * A small A2A server on node:http: JSON-RPC 2.0 on `POST /` and `POST /a2a` in both A2A 0.3 and A2A 1.0 (the methods
 * and shapes are in `a2a-rpc.ts`), the agent card on `GET /.well-known/agent-card.json` (shaped by the request's
 * `A2A-Version` header, `a2a-card.ts`), and `GET /health`. Tasks live in a `TaskStore` (in memory by default).
 * Handler failures answer a generic JSON-RPC error; the handler's own error text is logged, never sent.
 *
 * Behind the platform, JSON-RPC is for the platform's A2A proxy only: given an inbound token (`inbound`), the server
 * answers 401 to a request without it in `x-molecule-inbound-token`, before reading its body. The agent card and
 * `/health` stay public.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { INBOUND_TOKEN_HEADER } from "@molecule/contracts/inbound";
import { secretsEqual } from "@molecule/identity/tokens";
import { A2A_VERSION_HEADER, cardFor, requestedVersion } from "./a2a-card.ts";
import type { MessageHandler } from "./a2a-handler.ts";
import { asRecord, JSONRPC_ERRORS } from "./a2a-protocol.ts";
import { dispatch, type JsonRpcId } from "./a2a-rpc.ts";
import type { AgentCard } from "./client.ts";
import { errorFields, type Logger, silentLogger } from "./log.ts";
import { TaskHub } from "./task-hub.ts";
import { InMemoryTaskStore, type TaskStore } from "./task-store.ts";

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
  /** Where tasks are kept. Default: in memory (`InMemoryTaskStore`), gone when the process ends. */
  taskStore?: TaskStore;
  /** Default "open". A function is asked on every request, so the token can arrive or change while serving. */
  inbound?: InboundAuth | (() => InboundAuth);
  /** Requests with a larger body answer 413. Default 1 MiB. */
  maxBodyBytes?: number;
  log?: Logger;
}

/** Builds the server without listening; see `startA2AServer`. */
export function createA2AServer(options: A2AServerOptions): Server {
  const log = options.log ?? silentLogger;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const card = typeof options.card === "function" ? options.card : () => options.card as AgentCard;
  const inboundOption = options.inbound ?? "open";
  const inbound = typeof inboundOption === "function" ? inboundOption : () => inboundOption;
  const closing = new AbortController();
  const hub = new TaskHub(options.taskStore ?? new InMemoryTaskStore());

  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (
      req.method === "GET" &&
      (path === "/.well-known/agent-card.json" || path === "/.well-known/agent.json")
    ) {
      // A version this server does not speak gets the newest card, which lists the versions it does.
      const version = requestedVersion(req.headers[A2A_VERSION_HEADER]) ?? "1.0";
      res.setHeader("vary", "A2A-Version");
      return sendJson(res, 200, cardFor(card(), `http://${req.headers.host ?? "localhost"}/`, version));
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
      handleRpc(req, res, { ...options, maxBodyBytes, log, closing: closing.signal, hub }).catch(
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
  server.on("close", () => {
    closing.abort();
    hub.stopAll();
  });
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
  hub: TaskHub;
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
    rawId === undefined || rawId === null || typeof rawId === "string" || Number.isInteger(rawId);
  const id: JsonRpcId = idValid && rawId !== undefined ? (rawId as JsonRpcId) : null;
  if (!request || request.jsonrpc !== "2.0" || typeof request.method !== "string" || !idValid) {
    return sendJson(res, 200, rpcError(id, JSONRPC_ERRORS.invalidRequest, "invalid JSON-RPC 2.0 request"));
  }
  await dispatch(
    {
      id,
      notification: rawId === undefined,
      method: request.method,
      params: request.params,
      versionHeader: req.headers[A2A_VERSION_HEADER],
      res,
    },
    { onMessage: ctx.onMessage, hub: ctx.hub, log: ctx.log, closing: ctx.closing },
  );
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

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

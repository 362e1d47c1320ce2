import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerOptions,
  type ServerResponse,
} from "node:http";
import { DomainError } from "@molecule/contracts";
import type { Logger } from "pino";
import type { RequestMetrics } from "../metrics.ts";
import { errorEnvelope, shapeError, statusFor } from "./errors.ts";
import { logRequest, newRequestId } from "./middleware.ts";

/**
 * The few hottest routes served straight on Node's request and response, in front of the Hono app: no fetch `Request`
 * or `Response` is built for them. They keep everything the Hono middleware gives every route: a request id in
 * `x-request-id`, one request log line with the same fields, and errors shaped by the same `shapeError` into the same
 * envelope. Any other request goes to the Hono app unchanged.
 */

/** What a raw route's handler gets besides Node's request and response. */
export interface RawContext {
  readonly requestId: string;
  /** The path's `:name` segments, URI-decoded. */
  readonly params: Readonly<Record<string, string>>;
  /** A child logger carrying the request id, made on first use (most requests never log beyond the request line). */
  readonly logger: Logger;
}

/**
 * Answers the request on `res`, or throws: a throw before the response started is answered with the error envelope
 * (`shapeError`), after it the connection is cut. Headers set on `res` before throwing (`Retry-After`) are kept.
 */
export type RawHandler = (req: IncomingMessage, res: ServerResponse, context: RawContext) => Promise<void>;

export interface RawRoute {
  method: string;
  /** As Hono writes it, `/workspaces/:id/a2a`: exact segments and `:name` parameters. Also the log line's route. */
  path: string;
  handler: RawHandler;
  /** A successful answer is logged at debug, as `requestLog`'s `debugRoutes` (for frequent, uneventful routes). */
  quiet?: boolean;
}

interface CompiledRoute extends RawRoute {
  pattern: RegExp;
  names: string[];
}

function compile(route: RawRoute): CompiledRoute {
  const names: string[] = [];
  const source = route.path
    .split("/")
    .map((segment) => {
      if (!segment.startsWith(":")) return segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      names.push(segment.slice(1));
      return "([^/]+)";
    })
    .join("/");
  return { ...route, pattern: new RegExp(`^${source}$`), names };
}

function decode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

class Context implements RawContext {
  private child: Logger | undefined;
  constructor(
    readonly requestId: string,
    readonly params: Readonly<Record<string, string>>,
    private readonly root: Logger,
  ) {}
  get logger(): Logger {
    this.child ??= this.root.child({ requestId: this.requestId });
    return this.child;
  }
}

/** Writes `body` as JSON with its length, in one write. */
export function writeJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

/**
 * A request listener that serves `routes` itself and hands every other request to `fallback` (the Hono app's
 * listener, `getRequestListener(app.fetch)` from @hono/node-server).
 */
export function frontDoor(
  routes: readonly RawRoute[],
  fallback: RequestListener,
  logger: Logger,
  metrics?: RequestMetrics,
): RequestListener {
  const compiled = routes.map(compile);
  return (req, res) => {
    const url = req.url ?? "/";
    const query = url.indexOf("?");
    const path = query === -1 ? url : url.slice(0, query);
    for (const route of compiled) {
      if (route.method !== req.method) continue;
      const match = route.pattern.exec(path);
      if (!match) continue;
      const params: Record<string, string> = {};
      route.names.forEach((name, i) => {
        params[name] = decode(match[i + 1] ?? "");
      });
      serveRaw(route, req, res, params, logger, metrics);
      return;
    }
    fallback(req, res);
  };
}

function serveRaw(
  route: CompiledRoute,
  req: IncomingMessage,
  res: ServerResponse,
  params: Record<string, string>,
  logger: Logger,
  metrics: RequestMetrics | undefined,
): void {
  const started = performance.now();
  const context = new Context(newRequestId(), params, logger);
  res.setHeader("x-request-id", context.requestId);
  const finish = () =>
    logRequest(
      logger,
      {
        requestId: context.requestId,
        method: route.method,
        route: route.path,
        status: res.statusCode,
        started,
      },
      route.quiet === true,
      metrics,
    );
  route.handler(req, res, context).then(finish, (error: unknown) => {
    if (res.headersSent) {
      res.destroy();
    } else {
      const shaped = shapeError(error, context.logger);
      writeJson(
        res,
        statusFor(shaped.code),
        errorEnvelope(shaped.code, shaped.message, context.requestId, shaped.details),
      );
    }
    finish();
  });
}

/**
 * The whole body, at most `maxBytes` (a declared or actual length over it is `payload_too_large` with `message`, and
 * the connection is closed after the answer rather than reading the rest). A body the client abandons half-way is
 * `bad_request`.
 */
export function readBody(
  req: IncomingMessage,
  res: ServerResponse,
  maxBytes: number,
  message: string,
): Promise<Buffer> {
  const tooLarge = () => {
    res.setHeader("connection", "close");
    return new DomainError("payload_too_large", message);
  };
  const declared = Number(req.headers["content-length"]);
  if (declared > maxBytes) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const fail = (error: Error) => {
      if (settled) return;
      settled = true;
      chunks.length = 0;
      reject(error);
    };
    req.on("data", (chunk: Buffer) => {
      if (settled) return;
      size += chunk.byteLength;
      if (size > maxBytes) fail(tooLarge());
      else chunks.push(chunk);
    });
    req.once("end", () => {
      if (settled) return;
      settled = true;
      resolve(chunks.length === 1 && chunks[0] ? chunks[0] : Buffer.concat(chunks, size));
    });
    const abandoned = () => {
      if (!settled) fail(new DomainError("bad_request", "the request body was not completed"));
    };
    req.once("error", abandoned);
    req.once("close", abandoned);
  });
}

/**
 * A `createServer` for @hono/node-server's `serve({ createServer })`: the server it makes puts {@link frontDoor}
 * with `routes` in front of the listener `serve` built for the Hono app.
 */
export function frontDoorServer(routes: readonly RawRoute[], logger: Logger, metrics?: RequestMetrics) {
  return ((options: ServerOptions, listener: RequestListener): Server =>
    createServer(options, frontDoor(routes, listener, logger, metrics))) as unknown as typeof createServer;
}

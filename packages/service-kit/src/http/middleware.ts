import { randomFillSync } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { Logger } from "pino";
import type { RequestMetrics } from "../metrics.ts";
import type { ServiceEnv } from "./env.ts";
import { errorResponse } from "./errors.ts";

/** Random bytes drawn in bulk: one `randomBytes` call per 512 request ids instead of one per request. */
const ID_BYTES = 8;
const pool = Buffer.alloc(ID_BYTES * 512);
let poolOffset = pool.length;

/** `req_` and 16 hex digits: the id every request gets, returned in `x-request-id` and written on its log lines. */
export function newRequestId(): string {
  if (poolOffset === pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const id = `req_${pool.toString("hex", poolOffset, poolOffset + ID_BYTES)}`;
  poolOffset += ID_BYTES;
  return id;
}

/**
 * The request log line's fields, for the Hono middleware and the raw routes alike; the request metrics are recorded
 * here too, so both kinds of route are counted the same way.
 */
export function logRequest(
  logger: Logger,
  line: { requestId: string; method: string; route: string; status: number; started: number },
  quietRoute: boolean,
  metrics?: RequestMetrics,
): void {
  const elapsedMs = performance.now() - line.started;
  metrics?.observeRequest(line.method, line.route, line.status, elapsedMs / 1000);
  const quiet = quietRoute && line.status >= 200 && line.status < 300;
  if (quiet && !logger.isLevelEnabled("debug")) return;
  logger[quiet ? "debug" : "info"](
    {
      requestId: line.requestId,
      method: line.method,
      route: line.route,
      status: line.status,
      durationMs: Math.round(elapsedMs * 10) / 10,
    },
    "request",
  );
}

export interface RequestLogOptions {
  /**
   * Routes (`"POST /registry/heartbeat"`: method, a space, the route pattern) whose successful (2xx) answers are logged
   * at debug rather than info: the frequent, uneventful ones. Any other answer on them is logged at info.
   */
  debugRoutes?: readonly string[];
  /** Where each request is counted (by method, route pattern and status) with its duration. */
  metrics?: RequestMetrics;
}

/**
 * Gives each request an id (returned in `x-request-id`) and a child logger carrying it, and writes one log line per
 * request with its method, route, status and duration.
 */
export function requestLog(logger: Logger, options: RequestLogOptions = {}): MiddlewareHandler<ServiceEnv> {
  const debugRoutes = new Set(options.debugRoutes);
  return async (c, next) => {
    const requestId = newRequestId();
    const started = performance.now();
    c.set("requestId", requestId);
    c.set("logger", logger.child({ requestId }));
    c.header("x-request-id", requestId);
    await next();
    const route = c.req.routePath;
    logRequest(
      logger,
      { requestId, method: c.req.method, route, status: c.res.status, started },
      debugRoutes.has(`${c.req.method} ${route}`),
      options.metrics,
    );
  };
}

/** Refuses a body over `maxBytes` with `payload_too_large` in the error envelope. */
export function limitBody(maxBytes: number): MiddlewareHandler<ServiceEnv> {
  return bodyLimit({
    maxSize: maxBytes,
    onError: (c) => errorResponse(c as never, "payload_too_large", `body exceeds ${maxBytes} bytes`),
  });
}

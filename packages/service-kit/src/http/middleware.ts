import { randomBytes } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { Logger } from "pino";
import type { ServiceEnv } from "./env.ts";
import { errorResponse } from "./errors.ts";

export interface RequestLogOptions {
  /**
   * Routes (`"POST /registry/heartbeat"`: method, a space, the route pattern) whose successful (2xx) answers are logged
   * at debug rather than info: the frequent, uneventful ones. Any other answer on them is logged at info.
   */
  debugRoutes?: readonly string[];
}

/**
 * Gives each request an id (returned in `x-request-id`) and a child logger carrying it, and writes one log line per
 * request with its method, route, status and duration.
 */
export function requestLog(logger: Logger, options: RequestLogOptions = {}): MiddlewareHandler<ServiceEnv> {
  const debugRoutes = new Set(options.debugRoutes);
  return async (c, next) => {
    const requestId = `req_${randomBytes(8).toString("hex")}`;
    const started = performance.now();
    c.set("requestId", requestId);
    c.set("logger", logger.child({ requestId }));
    c.header("x-request-id", requestId);
    await next();
    const route = c.req.routePath;
    const status = c.res.status;
    const quiet = status >= 200 && status < 300 && debugRoutes.has(`${c.req.method} ${route}`);
    if (quiet && !logger.isLevelEnabled("debug")) return;
    logger[quiet ? "debug" : "info"](
      {
        requestId,
        method: c.req.method,
        route,
        status,
        durationMs: Math.round((performance.now() - started) * 10) / 10,
      },
      "request",
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

import { A2ARequest, DomainError, WorkspaceId } from "@molecule/contracts";
import { Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { identify } from "../http/auth.ts";
import { parseWith, readJsonText } from "../http/body.ts";
import { errorResponse } from "../http/errors.ts";
import type { AppEnv, Caller } from "../http/types.ts";
import { type A2AService, RETRY_AFTER_SECONDS } from "../services/a2a.ts";
import type { PlatformDeps } from "../services/deps.ts";

const targetId = (raw: string) => parseWith(WorkspaceId, raw, "workspace id in the path");

function requireCaller(c: { get(key: "caller"): Caller | null }): Caller {
  const caller = c.get("caller");
  if (!caller) throw new DomainError("unauthorized", "a workspace or admin bearer token is required");
  return caller;
}

/** Sets Retry-After on the 503 a stopped or offline target answers, then lets the error handler shape it. */
const retryAfter: MiddlewareHandler<AppEnv> = async (c, next) => {
  try {
    await next();
  } catch (err) {
    if (err instanceof DomainError && err.code === "upstream_unavailable") {
      c.header("retry-after", String(RETRY_AFTER_SECONDS));
    }
    throw err;
  }
  if (c.error instanceof DomainError && c.error.code === "upstream_unavailable") {
    c.res.headers.set("retry-after", String(RETRY_AFTER_SECONDS));
  }
};

/**
 * `POST /workspaces/:id/a2a` (JSON-RPC A2A proxy) and `GET /registry/discover/:id`. Mounted before the global body
 * limit: the proxy has its own (`A2A_MAX_REQUEST_BYTES`). No middleware here applies to other paths.
 */
export function a2aRoutes(deps: PlatformDeps, a2a: A2AService) {
  const app = new Hono<AppEnv>();
  const limit = bodyLimit({
    maxSize: deps.settings.a2aMaxRequestBytes,
    onError: (c) =>
      errorResponse(
        c as never,
        "payload_too_large",
        `A2A request exceeds ${deps.settings.a2aMaxRequestBytes} bytes`,
      ),
  });

  app.post("/workspaces/:id/a2a", retryAfter, limit, identify(deps), async (c) => {
    const caller = requireCaller(c);
    const id = targetId(c.req.param("id"));
    // Read like every other route's body (JSON, curl's default form type, or no type); forwarded as sent.
    const { text, value } = await readJsonText(c);
    const request = parseWith(A2ARequest, value, "JSON-RPC request");
    return a2a.forward(caller, id, request, text);
  });

  app.get("/registry/discover/:id", identify(deps), async (c) => {
    const caller = requireCaller(c);
    return c.json(await a2a.discover(caller, targetId(c.req.param("id"))));
  });

  return app;
}

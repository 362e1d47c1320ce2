import { once } from "node:events";
import type { ServerResponse } from "node:http";
import {
  A2A_PROXY_ERROR_CODES,
  A2A_VERSION_HEADER,
  A2AProxyError,
  A2ARequest,
  AgentCard,
  DiscoverResponse,
  DomainError,
  WorkspaceId,
} from "@molecule/contracts";
import { type RawRoute, readBody, shapeError, statusFor } from "@molecule/service-kit/http";
import type { ApiRoute } from "@molecule/service-kit/openapi";
import type { RateLimiter } from "@molecule/service-kit/rate-limit";
import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Logger } from "pino";
import { z } from "zod";
import { bearerToken, identify } from "../http/auth.ts";
import { parseJsonText, parseWith } from "../http/body.ts";
import type { PlatformLimiters } from "../http/rate-limits.ts";
import type { AppEnv, Caller } from "../http/types.ts";
import { type A2AAnswer, type A2AService, RETRY_AFTER_SECONDS, STREAM_HEADERS } from "../services/a2a.ts";
import type { PlatformDeps } from "../services/deps.ts";
import { credentialKey, credentialOf } from "../services/tokens.ts";
import { CallerGone, WAKE_RETRY_AFTER_SECONDS } from "../services/wake.ts";

/**
 * `POST /workspaces/:id/a2a`, the JSON-RPC A2A proxy, is served twice over one A2AService: as a raw route in front of
 * the Hono app (`a2aRawRoute`, what a served platform answers with: no fetch Request or Response is built per call),
 * and as a Hono route (`a2aRoutes`, what `app.request()` reaches in process). Both check in the same order (a declared
 * body over the limit, the caller's `a2a` budget, the caller, the target id, the body's type, its size, its JSON, the
 * envelope), forward with `forward`, and shape errors in `proxyFailed`. A caller whose connection closed before its
 * answer (while its target woke) is logged with nginx's 499, and nothing is written.
 */

/** The status a request is logged with when its caller went away before it was answered. */
const CALLER_GONE_STATUS = 499;

const PROXY_PATH = "/workspaces/:id/a2a";

const targetId = (raw: string) => parseWith(WorkspaceId, raw, "workspace id in the path");

function requireCaller(caller: Caller | null): Caller {
  if (!caller) throw new DomainError("unauthorized", "a workspace or admin bearer token is required");
  return caller;
}

/**
 * The caller, once its credential was counted in the `a2a` budget (before any lookup, so a credential over its
 * budget costs nothing more): the rate-limit fields go through `setHeader`, on the answer or the error alike.
 */
async function limitedCaller(
  deps: PlatformDeps,
  a2a: A2AService,
  limiter: RateLimiter,
  authorization: string | undefined,
  setHeader: (name: string, value: string) => void,
): Promise<Caller> {
  const credential = credentialOf(deps, bearerToken(authorization));
  if (credential) limiter.enforce(credentialKey(credential), setHeader);
  return requireCaller(await a2a.resolveCaller(credential));
}

const tooLargeMessage = (deps: PlatformDeps) =>
  `A2A request exceeds ${deps.settings.a2aMaxRequestBytes} bytes`;

type RpcId = string | number | null;

/**
 * A request that is not JSON (`-32700`) or not a JSON-RPC 2.0 request object (`-32600`), with the id it carried when
 * one could be read.
 */
class FramingError extends DomainError {
  constructor(
    readonly rpcCode: -32700 | -32600,
    message: string,
    readonly rpcId: RpcId = null,
  ) {
    super("bad_request", message);
  }
}

/** The JSON-RPC request in a body's text, or a FramingError (a type other than JSON stays a 415). */
function readEnvelope(type: string | undefined, text: string): A2ARequest {
  let value: unknown;
  try {
    value = parseJsonText(type, text);
  } catch (error) {
    if (error instanceof DomainError && error.code === "bad_request") {
      throw new FramingError(-32700, "parse error: the body is not valid JSON");
    }
    throw error;
  }
  const parsed = A2ARequest.safeParse(value);
  if (!parsed.success) {
    const id = (value as { id?: unknown } | null)?.id;
    throw new FramingError(
      -32600,
      "invalid request: expected a JSON-RPC 2.0 request object with a string method",
      typeof id === "string" || typeof id === "number" ? id : null,
    );
  }
  return parsed.data;
}

/** The request's id as far as it could be read: an error answers with it (null when there is none to read). */
function idOf(request: A2ARequest | undefined): RpcId {
  const id = request?.id;
  return typeof id === "string" || typeof id === "number" ? id : null;
}

/**
 * The one place a proxy error is shaped: every error the proxy raises itself is a JSON-RPC error object with the
 * request's id, the error's stable name and the request id in `error.data`, so A2A clients read it; the HTTP status
 * stays the error's own (the official SDK client reads a JSON-RPC error from any status), and a stopped or offline
 * target's 503 says when to come back (`Retry-After`), as does a `wake_timeout` (the target is still waking).
 */
function proxyFailed(
  error: unknown,
  rpcId: RpcId,
  requestId: string,
  logger: Logger | undefined,
): { status: number; headers: Record<string, string>; body: string } {
  const shaped = shapeError(error, logger);
  const id = error instanceof FramingError ? error.rpcId : rpcId;
  const code =
    error instanceof FramingError
      ? error.rpcCode
      : shaped.code === "bad_request" || shaped.code === "unsupported_media_type"
        ? A2A_PROXY_ERROR_CODES.invalid_request
        : ((A2A_PROXY_ERROR_CODES as Record<string, number>)[shaped.code] ?? A2A_PROXY_ERROR_CODES.internal);
  const data: Record<string, unknown> = { code: shaped.code, request_id: requestId };
  if (shaped.details !== undefined) data.details = shaped.details;
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (shaped.code === "upstream_unavailable") headers["retry-after"] = String(RETRY_AFTER_SECONDS);
  if (shaped.code === "wake_timeout") headers["retry-after"] = String(WAKE_RETRY_AFTER_SECONDS);
  return {
    status: statusFor(shaped.code),
    headers,
    body: JSON.stringify({ jsonrpc: "2.0", id, error: { code, message: shaped.message, data } }),
  };
}

/** The raw route: `POST /workspaces/:id/a2a` on Node's request and response. */
export function a2aRawRoute(deps: PlatformDeps, a2a: A2AService, limiter: RateLimiter): RawRoute {
  return {
    method: "POST",
    path: PROXY_PATH,
    handler: async (req, res, context) => {
      let request: A2ARequest | undefined;
      // The response closing before it finished is the caller's connection closing.
      const callerGone = new AbortController();
      const onClose = () => {
        if (!res.writableFinished) callerGone.abort();
      };
      res.once("close", onClose);
      try {
        const maxBytes = deps.settings.a2aMaxRequestBytes;
        if (Number(req.headers["content-length"]) > maxBytes) {
          // Refused before anything else, as Hono's body limit does for a declared length.
          await readBody(req, res, maxBytes, tooLargeMessage(deps));
        }
        const caller = await limitedCaller(deps, a2a, limiter, req.headers.authorization, (name, value) =>
          res.setHeader(name, value),
        );
        const id = targetId(context.params.id ?? "");
        const type = req.headers["content-type"];
        parseJsonText(type, null); // the type is refused before the body is read
        const raw = (await readBody(req, res, maxBytes, tooLargeMessage(deps))).toString("utf8");
        // As fetch's text() reads it: a leading byte order mark is not part of the text.
        const text = raw.charCodeAt(0) === 0xfeff ? raw.slice(1) : raw;
        request = readEnvelope(type, text);
        const version = req.headers[A2A_VERSION_HEADER];
        const answer = await a2a.forward(
          caller,
          id,
          request,
          text,
          typeof version === "string" ? version : undefined,
          callerGone.signal,
        );
        if (answer.kind === "json") {
          res.writeHead(200, {
            "content-type": answer.contentType,
            "content-length": answer.body.byteLength,
          });
          res.end(answer.body);
          return;
        }
        res.off("close", onClose);
        await relay(answer, res);
      } catch (error) {
        if (error instanceof CallerGone) {
          res.statusCode = CALLER_GONE_STATUS;
          res.destroy();
          return;
        }
        if (res.headersSent) throw error;
        const failed = proxyFailed(error, idOf(request), context.requestId, context.logger);
        res.writeHead(failed.status, { ...failed.headers, "content-length": Buffer.byteLength(failed.body) });
        res.end(failed.body);
      }
    },
  };
}

/** Writes an event stream as it comes, waiting when the client reads slower; the client leaving cancels it. */
async function relay(answer: A2AAnswer & { kind: "stream" }, res: ServerResponse): Promise<void> {
  res.on("close", () => {
    if (!res.writableFinished) answer.cancel();
  });
  res.writeHead(200, { "content-type": answer.contentType, ...STREAM_HEADERS });
  for await (const chunk of answer.chunks) {
    if (res.destroyed) return;
    if (!res.write(chunk)) await Promise.race([once(res, "drain"), once(res, "close")]);
  }
  res.end();
}

/** The answer as a fetch Response, for the Hono route, with `headers` (the rate-limit fields). */
function toResponse(answer: A2AAnswer, headers: Record<string, string>): Response {
  if (answer.kind === "json") {
    return new Response(answer.body, {
      status: 200,
      headers: { ...headers, "content-type": answer.contentType },
    });
  }
  const chunks = answer.chunks[Symbol.asyncIterator]();
  const body = new ReadableStream<Uint8Array>({
    async pull(out) {
      let next: IteratorResult<Uint8Array>;
      try {
        next = await chunks.next();
      } catch (error) {
        out.error(error);
        return;
      }
      if (next.done) out.close();
      else out.enqueue(next.value);
    },
    cancel() {
      answer.cancel();
    },
  });
  return new Response(body, {
    status: 200,
    headers: { ...headers, "content-type": answer.contentType, ...STREAM_HEADERS },
  });
}

/** A proxy error as the Hono route answers it (see {@link proxyFailed}). */
function failedResponse(c: Context<AppEnv>, error: unknown, rpcId: RpcId): Response {
  const failed = proxyFailed(error, rpcId, c.get("requestId") ?? "unknown", c.get("logger"));
  return c.body(failed.body, failed.status as ContentfulStatusCode, failed.headers);
}

/** The proxy's JSON-RPC endpoint for workspace `id`, at the origin the caller reached this platform at. */
function proxyUrlOf(c: Context<AppEnv>, id: string): string {
  return `${new URL(c.req.url).origin}/workspaces/${id}/a2a`;
}

/**
 * `POST /workspaces/:id/a2a` (JSON-RPC A2A proxy) and `GET /registry/discover/:id` on Hono. Mounted before the global
 * body limit: the proxy has its own (`A2A_MAX_REQUEST_BYTES`). No middleware here applies to other paths.
 */
export function a2aRoutes(deps: PlatformDeps, a2a: A2AService, limiters: PlatformLimiters) {
  const app = new Hono<AppEnv>();
  const limit = bodyLimit({
    maxSize: deps.settings.a2aMaxRequestBytes,
    onError: (c) =>
      failedResponse(c as never, new DomainError("payload_too_large", tooLargeMessage(deps)), null),
  });

  app.post(PROXY_PATH, limit, async (c) => {
    let request: A2ARequest | undefined;
    try {
      // A Response the route builds itself does not carry headers set on the context: they are passed to it.
      const limitHeaders: Record<string, string> = {};
      const caller = await limitedCaller(
        deps,
        a2a,
        limiters.a2a,
        c.req.header("authorization"),
        (name, value) => {
          limitHeaders[name] = value;
          c.header(name, value);
        },
      );
      const id = targetId(c.req.param("id"));
      // Read like every other route's body (JSON, curl's default form type, or no type); forwarded as sent.
      const type = c.req.header("content-type");
      parseJsonText(type, null);
      const text = await c.req.text();
      request = readEnvelope(type, text);
      return toResponse(
        await a2a.forward(caller, id, request, text, c.req.header(A2A_VERSION_HEADER), c.req.raw.signal),
        limitHeaders,
      );
    } catch (error) {
      if (error instanceof CallerGone) return c.body(null, CALLER_GONE_STATUS as ContentfulStatusCode);
      // The body limit's own error goes back to its middleware, which answers with onError.
      if (error instanceof Error && error.name === "BodyLimitError") throw error;
      return failedResponse(c, error, idOf(request));
    }
  });

  // The target's card, its interfaces pointing at this proxy as the caller reached it: what an A2A client is given.
  app.get("/workspaces/:id/.well-known/agent-card.json", identify(deps, limiters.api), async (c) => {
    const caller = requireCaller(c.get("caller"));
    const id = targetId(c.req.param("id"));
    return c.json(await a2a.proxiedCard(caller, id, proxyUrlOf(c, id)));
  });

  // The same card (same rewrite) with the target's status.
  app.get("/registry/discover/:id", identify(deps, limiters.api), async (c) => {
    const caller = requireCaller(c.get("caller"));
    const id = targetId(c.req.param("id"));
    return c.json(await a2a.discover(caller, id, proxyUrlOf(c, id)));
  });

  return app;
}

const TargetPath = z.object({ id: WorkspaceId });

export const a2aApi: ApiRoute[] = [
  {
    method: "POST",
    path: PROXY_PATH,
    summary: "Send a JSON-RPC request to a workspace's agent (A2A proxy)",
    description:
      "Any JSON-RPC 2.0 method is forwarded as sent, with the caller's A2A-Version header; the target's answer comes " +
      "back as it sent it (JSON, or an event stream). Errors the proxy raises itself are JSON-RPC error objects with " +
      "the stable code and request id in error.data.",
    tag: "a2a",
    auth: ["workspace", "admin"],
    params: TargetPath,
    headers: z.object({ [A2A_VERSION_HEADER]: z.string().optional() }),
    body: A2ARequest,
    responses: {
      200: {
        description:
          "The target agent's JSON-RPC answer as it sent it: JSON, or an event stream relayed as it comes",
        schema: z.unknown(),
        alsoAs: ["text/event-stream"],
      },
    },
    errors: [400, 403, 404, 413, 415, 502, 503, 504],
    errorSchema: A2AProxyError,
  },
  {
    method: "GET",
    path: "/workspaces/:id/.well-known/agent-card.json",
    summary: "A workspace's agent card, pointing at the proxy",
    tag: "a2a",
    auth: ["workspace", "admin"],
    params: TargetPath,
    responses: {
      200: { description: "The registered card, its interfaces at this proxy", schema: AgentCard },
    },
    errors: [400, 403, 404],
  },
  {
    method: "GET",
    path: "/registry/discover/:id",
    summary: "What the caller may know of another workspace",
    tag: "a2a",
    auth: ["workspace", "admin"],
    params: TargetPath,
    responses: {
      200: { description: "The target's name, status, reachability and card", schema: DiscoverResponse },
    },
    errors: [400, 403, 404],
  },
];

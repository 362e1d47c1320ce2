import { once } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import { A2ARequest, DomainError, WorkspaceId } from "@molecule/contracts";
import { type RawContext, type RawRoute, readBody } from "@molecule/service-kit/http";
import { Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { bearerToken, identify } from "../http/auth.ts";
import { parseJsonText, parseWith, readJsonText } from "../http/body.ts";
import { errorResponse } from "../http/errors.ts";
import type { AppEnv, Caller } from "../http/types.ts";
import { type A2AAnswer, type A2AService, RETRY_AFTER_SECONDS, STREAM_HEADERS } from "../services/a2a.ts";
import type { PlatformDeps } from "../services/deps.ts";

/**
 * `POST /workspaces/:id/a2a`, the JSON-RPC A2A proxy, is served twice over one A2AService: as a raw route in front of
 * the Hono app (`a2aRawRoute`, what a served platform answers with: no fetch Request or Response is built per call),
 * and as a Hono route (`a2aRoutes`, what `app.request()` reaches in process). Both check in the same order (a declared
 * body over the limit, the caller, the target id, the body's type, its size, its JSON, the envelope), forward with
 * `forward`, and shape errors in `proxyFailed`.
 */

const PROXY_PATH = "/workspaces/:id/a2a";

const targetId = (raw: string) => parseWith(WorkspaceId, raw, "workspace id in the path");

function requireCaller(caller: Caller | null): Caller {
  if (!caller) throw new DomainError("unauthorized", "a workspace or admin bearer token is required");
  return caller;
}

const tooLargeMessage = (deps: PlatformDeps) =>
  `A2A request exceeds ${deps.settings.a2aMaxRequestBytes} bytes`;

/**
 * The one place a proxy error gets more than the service's error envelope: a stopped or offline target's 503 says
 * when to come back (`Retry-After`). Called with the error before it is rethrown to the envelope's writer.
 */
function proxyFailed(error: unknown, setHeader: (name: string, value: string) => void): void {
  if (error instanceof DomainError && error.code === "upstream_unavailable") {
    setHeader("retry-after", String(RETRY_AFTER_SECONDS));
  }
}

/** The raw route: `POST /workspaces/:id/a2a` on Node's request and response. */
export function a2aRawRoute(deps: PlatformDeps, a2a: A2AService): RawRoute {
  return {
    method: "POST",
    path: PROXY_PATH,
    handler: async (req, res, context) => {
      try {
        await proxy(deps, a2a, req, res, context);
      } catch (error) {
        proxyFailed(error, (name, value) => res.setHeader(name, value));
        throw error;
      }
    },
  };
}

async function proxy(
  deps: PlatformDeps,
  a2a: A2AService,
  req: IncomingMessage,
  res: ServerResponse,
  context: RawContext,
): Promise<void> {
  const maxBytes = deps.settings.a2aMaxRequestBytes;
  if (Number(req.headers["content-length"]) > maxBytes) {
    // Refused before anything else, as Hono's body limit does for a declared length.
    await readBody(req, res, maxBytes, tooLargeMessage(deps));
  }
  const caller = requireCaller(await a2a.resolveCaller(bearerToken(req.headers.authorization)));
  const id = targetId(context.params.id ?? "");
  const type = req.headers["content-type"];
  parseJsonText(type, null); // the type is refused before the body is read
  const raw = (await readBody(req, res, maxBytes, tooLargeMessage(deps))).toString("utf8");
  // As fetch's text() reads it: a leading byte order mark is not part of the text.
  const text = raw.charCodeAt(0) === 0xfeff ? raw.slice(1) : raw;
  const request = parseWith(A2ARequest, parseJsonText(type, text), "JSON-RPC request");
  const answer = await a2a.forward(caller, id, request, text);
  if (answer.kind === "json") {
    res.writeHead(200, { "content-type": answer.contentType, "content-length": answer.body.byteLength });
    res.end(answer.body);
    return;
  }
  await relay(answer, res);
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

/** The answer as a fetch Response, for the Hono route. */
function toResponse(answer: A2AAnswer): Response {
  if (answer.kind === "json") {
    return new Response(answer.body, { status: 200, headers: { "content-type": answer.contentType } });
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
    headers: { "content-type": answer.contentType, ...STREAM_HEADERS },
  });
}

/** Sets Retry-After on the 503 a stopped or offline target answers, then lets the error handler shape it. */
const retryAfter: MiddlewareHandler<AppEnv> = async (c, next) => {
  try {
    await next();
  } catch (err) {
    proxyFailed(err, (name, value) => c.header(name, value));
    throw err;
  }
  if (c.error) proxyFailed(c.error, (name, value) => c.res.headers.set(name, value));
};

/**
 * `POST /workspaces/:id/a2a` (JSON-RPC A2A proxy) and `GET /registry/discover/:id` on Hono. Mounted before the global
 * body limit: the proxy has its own (`A2A_MAX_REQUEST_BYTES`). No middleware here applies to other paths.
 */
export function a2aRoutes(deps: PlatformDeps, a2a: A2AService) {
  const app = new Hono<AppEnv>();
  const limit = bodyLimit({
    maxSize: deps.settings.a2aMaxRequestBytes,
    onError: (c) => errorResponse(c as never, "payload_too_large", tooLargeMessage(deps)),
  });

  app.post(PROXY_PATH, retryAfter, limit, async (c) => {
    const caller = requireCaller(await a2a.resolveCaller(bearerToken(c.req.header("authorization"))));
    const id = targetId(c.req.param("id"));
    // Read like every other route's body (JSON, curl's default form type, or no type); forwarded as sent.
    const { text, value } = await readJsonText(c);
    const request = parseWith(A2ARequest, value, "JSON-RPC request");
    return toResponse(await a2a.forward(caller, id, request, text));
  });

  app.get("/registry/discover/:id", identify(deps), async (c) => {
    const caller = requireCaller(c.get("caller"));
    return c.json(await a2a.discover(caller, targetId(c.req.param("id"))));
  });

  return app;
}

/**
 * Every route of the tenant platform, fuzzed with hostile input as a caller with legitimate credentials would send
 * it: each answer is below 500 with the error envelope when refused, a refused request changes no row, input that
 * PostgreSQL cannot store (NUL, lone surrogates) or a malformed id is always refused, and the service stays healthy.
 */
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Answer,
  checkAnswer,
  encodeSegment,
  fuzzEveryRoute,
  fuzzParameters,
  holdsUnstorableText,
  hostileId,
  hostileJson,
  hostileString,
  mutatedBody,
  rawBody,
  resolvedByUrlParser,
  servedRoutes,
  storedPart,
  tableDump,
} from "../../../test-support/fuzz.ts";
import { AnswerChecker, checkAnswerText } from "../../../test-support/openapi.ts";
import { ADMIN_TOKEN, createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { tenantOpenApi } from "./api.ts";

let platform: TestPlatform;
let tables: ReturnType<typeof tableDump>;
/** A managed workspace (admin routes), an external one with a registered agent (workspace-token routes). */
let managedId: string;
let agentId: string;
let agentToken: string;

interface Sent {
  method: string;
  path: string;
  token?: string | null;
  body?: string;
  headers?: Record<string, string>;
}

let documented: AnswerChecker | undefined;

async function send(request: Sent): Promise<Answer> {
  const headers: Record<string, string> = { ...request.headers };
  const token = request.token === undefined ? ADMIN_TOKEN : request.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (request.body !== undefined) headers["content-type"] ??= "application/json";
  const controller = new AbortController();
  const response = await platform.app.request(request.path, {
    method: request.method,
    headers,
    signal: controller.signal,
    ...(request.body === undefined ? {} : { body: request.body }),
  });
  // Event streams never end on their own: their status and headers are the answer.
  if (response.headers.get("content-type")?.startsWith("text/event-stream")) {
    await response.body?.cancel();
    controller.abort();
    return { status: response.status, text: "", headers: response.headers };
  }
  return { status: response.status, text: await response.text(), headers: response.headers };
}

const describeRequest = (request: Sent) =>
  `${request.method} ${JSON.stringify(request.path)} body=${JSON.stringify(request.body?.slice(0, 200))}`;

/**
 * Sends one hostile request and checks the answer; a refused request must leave every table as it was. `mustRefuse`
 * marks requests no correct service may accept (a malformed id, text PostgreSQL cannot store).
 */
async function probe(
  request: Sent,
  mustRefuse: boolean,
  options: { upstream?: boolean } = {},
): Promise<void> {
  const before = await tables.dump();
  const answer = await send(request);
  const what = describeRequest(request);
  // Every answer, refusals included, is what the OpenAPI document says for its route and status.
  documented ??= new AnswerChecker(tenantOpenApi());
  checkAnswerText(
    documented,
    request.method,
    request.path,
    answer.status,
    answer.headers.get("content-type"),
    answer.text,
  );
  if (options.upstream && [502, 504].includes(answer.status)) {
    // The A2A proxy answers 502/504 when the agent cannot be reached: still the envelope, still nothing stored.
    checkAnswer({ ...answer, status: 499 }, what);
  } else {
    checkAnswer(answer, what);
  }
  const normalised = resolvedByUrlParser(request.path);
  if (mustRefuse && !normalised) {
    expect(answer.status, `${what} must be refused: ${answer.text.slice(0, 200)}`).toBeGreaterThanOrEqual(
      400,
    );
  }
  if (answer.status >= 400) expect(await tables.dump(), `${what} changed state`).toBe(before);
}

const enc = encodeSegment;
const hostileBody = (valid: Record<string, unknown>) => rawBody(mutatedBody(valid));
/** A path segment: the hostile text percent-encoded (what a client library sends), or raw `%…` escapes. */
const segment = fc.oneof(
  hostileId.map((value) => enc(value)),
  fc.constantFrom("%ED%A0%80", "%00", "..%2F..%2Fetc", "%2e%2e", "%"),
);

beforeAll(async () => {
  platform = await createTestPlatform(createFakeProvisioner(), { allowedRuntimes: ["echo"] });
  tables = tableDump(platform.database.url);
  const managed = await platform.call("POST", "/workspaces", { body: { name: "managed", runtime: "echo" } });
  expect(managed.status).toBe(202);
  managedId = managed.body.workspace.id;
  const external = await platform.call("POST", "/workspaces", {
    body: { name: "agent", external: true, url: "http://127.0.0.1:9/a2a" },
  });
  expect(external.status).toBe(202);
  agentId = external.body.workspace.id;
  const registered = await platform.call("POST", "/registry/register", {
    token: external.body.connection.registration_token,
    body: { id: agentId },
  });
  expect(registered.status).toBe(200);
  agentToken = registered.body.auth_token;
});

afterAll(async () => {
  await tables?.close();
  await platform?.close();
});

const CREATE = {
  name: "fuzzed",
  runtime: "echo",
  tier: 2,
  secrets: { API_KEY: "v" },
  metadata: { team: "x" },
};
const SECRET = { value: "secret-value" };
const register = () => ({
  id: agentId,
  url: "http://127.0.0.1:9/a2a",
  agent_card: { name: "fuzz", skills: [] },
});
const heartbeat = () => ({ workspace_id: agentId, status: "ok", detail: "fine" });
const POOL = { runtime: "echo", tier: 2, size: 1 };
const CLAIM = { id: "ws_0000000000aaaaaaaaaaaaaaaa", wait_seconds: 0 };

/** Each served route and the hostile requests made for it. */
const ROUTES: Record<string, () => Promise<void>> = {
  // The API's description and its page are public and take no input: a hostile query string or token is ignored.
  ...Object.fromEntries(
    ["/openapi.json", "/docs"].map((path) => [
      `GET ${path}`,
      () =>
        fc.assert(
          fc.asyncProperty(hostileString, hostileString, async (junk, token) =>
            probe(
              {
                method: "GET",
                path: `${path}?x=${enc(junk)}`,
                token: token.replace(/[^\x21-\x7e]/g, "") || null,
              },
              false,
            ),
          ),
          fuzzParameters(),
        ),
    ]),
  ),
  "GET /health": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ method: "GET", path: `/health?x=${enc(junk)}` }, false),
      ),
      fuzzParameters(),
    ),
  "GET /": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe(
          {
            method: "GET",
            path: "/",
            token: null,
            headers: { "if-none-match": junk.replace(/[^\x20-\x7e]/g, "") },
          },
          false,
        ),
      ),
      fuzzParameters(),
    ),
  "GET /canvas/:file": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (file) =>
        probe({ method: "GET", path: `/canvas/${enc(file)}`, token: null }, false),
      ),
      fuzzParameters(),
    ),
  "POST /workspaces": () =>
    fc.assert(
      fc.asyncProperty(hostileBody(CREATE), fc.option(hostileString), async (body, key) => {
        const headers: Record<string, string> = {};
        if (key !== null) headers["idempotency-key"] = key.replace(/[^\x20-\x7e]/g, "?");
        await probe(
          { method: "POST", path: "/workspaces", body, headers },
          holdsUnstorableText(storedPart(body, CREATE)),
        );
      }),
      fuzzParameters(),
    ),
  "GET /workspaces": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (status) =>
        probe({ method: "GET", path: `/workspaces?status=${enc(status)}` }, true),
      ),
      fuzzParameters(),
    ),
  "GET /workspaces/:id": () => idRoute("GET", (id) => `/workspaces/${id}`),
  "GET /workspaces/:id/operations": () => idRoute("GET", (id) => `/workspaces/${id}/operations`),
  "DELETE /workspaces/:id": () => idRoute("DELETE", (id) => `/workspaces/${id}`),
  "POST /workspaces/:id/stop": () => idRoute("POST", (id) => `/workspaces/${id}/stop`),
  "POST /workspaces/:id/start": () => idRoute("POST", (id) => `/workspaces/${id}/start`),
  "POST /workspaces/:id/restart": () => idRoute("POST", (id) => `/workspaces/${id}/restart`),
  "POST /workspaces/:id/redeploy": () => idRoute("POST", (id) => `/workspaces/${id}/redeploy`),
  "POST /workspaces/:id/suspend": () => idRoute("POST", (id) => `/workspaces/${id}/suspend`),
  "GET /workspaces/:id/secrets": () => idRoute("GET", (id) => `/workspaces/${id}/secrets`),
  "GET /workspaces/:id/secrets/values": async () => {
    await idRoute(
      "GET",
      (id) => `/workspaces/${id}/secrets/values`,
      () => agentToken,
    );
  },
  "PUT /workspaces/:id/secrets/:key": async () => {
    await idRoute(
      "PUT",
      (id) => `/workspaces/${id}/secrets/API_KEY`,
      undefined,
      JSON.stringify({ value: "v" }),
    );
    await fc.assert(
      fc.asyncProperty(hostileString, hostileBody(SECRET), async (key, body) =>
        probe(
          { method: "PUT", path: `/workspaces/${managedId}/secrets/${enc(key)}`, body },
          !/^[A-Za-z_][A-Za-z0-9_]{0,127}$/.test(key) || holdsUnstorableText(storedPart(body, SECRET)),
        ),
      ),
      fuzzParameters(),
    );
  },
  "DELETE /workspaces/:id/secrets/:key": async () => {
    await idRoute("DELETE", (id) => `/workspaces/${id}/secrets/API_KEY`);
    await fc.assert(
      fc.asyncProperty(hostileString, async (key) =>
        probe(
          { method: "DELETE", path: `/workspaces/${managedId}/secrets/${enc(key)}` },
          !/^[A-Za-z_][A-Za-z0-9_]{0,127}$/.test(key),
        ),
      ),
      fuzzParameters(),
    );
  },
  "GET /operations/:id": () => idRoute("GET", (id) => `/operations/${id}`),
  "GET /events": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (lastId) =>
        probe(
          {
            method: "GET",
            path: "/events",
            headers: { "last-event-id": lastId.replace(/[^\x20-\x7e]/g, "") },
          },
          false,
        ),
      ),
      fuzzParameters(),
    ),
  "GET /workspaces/:id/events": () =>
    idRoute(
      "GET",
      (id) => `/workspaces/${id}/events`,
      () => agentToken,
    ),
  "POST /registry/register": () =>
    fc.assert(
      fc.asyncProperty(hostileBody(register()), async (body) =>
        probe(
          { method: "POST", path: "/registry/register", body },
          holdsUnstorableText(storedPart(body, register())),
        ),
      ),
      fuzzParameters(),
    ),
  "POST /registry/heartbeat": () =>
    fc.assert(
      fc.asyncProperty(hostileBody(heartbeat()), async (body) =>
        probe(
          { method: "POST", path: "/registry/heartbeat", token: agentToken, body },
          holdsUnstorableText(storedPart(body, heartbeat())),
        ),
      ),
      fuzzParameters(),
    ),
  "POST /workspaces/:id/a2a": async () => {
    const envelope = {
      jsonrpc: "2.0",
      id: 1,
      method: "message/send",
      params: { message: { role: "user", parts: [] } },
    };
    await idRoute(
      "POST",
      (id) => `/workspaces/${id}/a2a`,
      () => agentToken,
      JSON.stringify(envelope),
    );
    await fc.assert(
      fc.asyncProperty(hostileBody(envelope), async (body) =>
        probe({ method: "POST", path: `/workspaces/${agentId}/a2a`, token: agentToken, body }, false, {
          upstream: true,
        }),
      ),
      fuzzParameters(),
    );
  },
  // A pool's target: refused unless it is a runtime of this platform, a tier and a size; the filler is not running.
  "PUT /pools": () =>
    fc.assert(
      fc.asyncProperty(hostileBody(POOL), async (body) =>
        probe({ method: "PUT", path: "/pools", body }, holdsUnstorableText(storedPart(body, POOL))),
      ),
      fuzzParameters(),
    ),
  "GET /pools": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ method: "GET", path: `/pools?x=${enc(junk)}` }, false),
      ),
      fuzzParameters(),
    ),
  // No pool member has this token (nor any other: no pool is filled here), whatever the body says.
  "POST /registry/claim": () =>
    fc.assert(
      fc.asyncProperty(hostileBody(CLAIM), async (body) =>
        probe({ method: "POST", path: "/registry/claim", token: "mpt_not-a-member", body }, true),
      ),
      fuzzParameters(),
    ),
  // The admin routes take no input: hostile query strings and bodies are ignored, never stored.
  "POST /admin/reconcile": () =>
    fc.assert(
      fc.asyncProperty(hostileString, hostileJson, async (junk, body) =>
        probe({ method: "POST", path: `/admin/reconcile?x=${enc(junk)}`, body: JSON.stringify(body) }, false),
      ),
      fuzzParameters(),
    ),
  "GET /admin/stats": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ method: "GET", path: `/admin/stats?x=${enc(junk)}` }, false),
      ),
      fuzzParameters(),
    ),
  // The Prometheus exposition takes no input: a hostile query string is ignored.
  "GET /metrics": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ method: "GET", path: `/metrics?x=${enc(junk)}` }, false),
      ),
      fuzzParameters(),
    ),
  // Backups are not configured here: hostile query strings and bodies get the 409 and change nothing.
  "POST /admin/backup": () =>
    fc.assert(
      fc.asyncProperty(hostileString, hostileJson, async (junk, body) =>
        probe({ method: "POST", path: `/admin/backup?x=${enc(junk)}`, body: JSON.stringify(body) }, true),
      ),
      fuzzParameters(),
    ),
  "GET /admin/backups": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ method: "GET", path: `/admin/backups?x=${enc(junk)}` }, true),
      ),
      fuzzParameters(),
    ),
  "GET /registry/discover/:id": () =>
    idRoute(
      "GET",
      (id) => `/registry/discover/${id}`,
      () => agentToken,
    ),
  "GET /workspaces/:id/.well-known/agent-card.json": () =>
    idRoute(
      "GET",
      (id) => `/workspaces/${id}/.well-known/agent-card.json`,
      () => agentToken,
    ),
};

/** A route whose `:id` segment is hostile: always refused, with or without a hostile body alongside. */
function idRoute(
  method: string,
  path: (id: string) => string,
  token?: () => string,
  body?: string,
): Promise<void> {
  return fc.assert(
    fc.asyncProperty(segment, fc.option(hostileJson), async (id, junk) => {
      const sent = junk === null || body === undefined ? body : JSON.stringify(junk);
      await probe(
        {
          method,
          path: path(id),
          ...(token ? { token: token() } : {}),
          ...(sent === undefined ? {} : { body: sent }),
        },
        true,
      );
    }),
    fuzzParameters(),
  );
}

describe("fuzzing every tenant-platform route with hostile input", () => {
  fuzzEveryRoute(ROUTES, () => platform.app);

  it("refuses hostile bearer tokens on every route that needs one, changing nothing", async () => {
    const routes = servedRoutes(platform.app).filter(
      (route) =>
        !["GET /health", "GET /", "GET /canvas/:file", "GET /openapi.json", "GET /docs"].includes(route),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...routes), hostileString, async (route, token) => {
        const [method = "GET", pattern = "/"] = route.split(" ");
        const path = pattern.replace(":id", agentId).replace(":key", "API_KEY");
        const clean = token.replace(/[^\x21-\x7e]/g, "") || "x";
        await probe({ method, path, token: clean, body: method === "GET" ? undefined : "{}" }, true);
      }),
      fuzzParameters(),
    );
  });

  it("is still healthy and its queued operations still run", async () => {
    expect((await send({ method: "GET", path: "/health" })).status).toBe(200);
    await platform.runner.drain();
    const listed = await platform.call("GET", "/workspaces");
    expect(listed.status).toBe(200);
    expect(listed.body.workspaces.length).toBeGreaterThanOrEqual(2);
  });
});

/**
 * Every route of the control plane, fuzzed with hostile input: admin routes with the admin token, tenant routes
 * correctly signed by a real org (an attacker with legitimate credentials). Each answer is below 500 with the error
 * envelope when refused, a refused request changes no row (request nonces aside: an authentic request is recorded
 * before the route reads its body), malformed ids, slugs and unstorable text are always refused, the operations
 * accepted along the way run without taking the runner down, and another org's rows are never touched.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Answer,
  checkAnswer,
  encodeSegment as enc,
  fuzzEveryRoute,
  fuzzParameters,
  holdsUnstorableText,
  hostileId,
  hostileString,
  mutatedBody,
  rawBody,
  resolvedByUrlParser,
  storedPart,
  tableDump,
} from "../../../test-support/fuzz.ts";
import { AnswerChecker, checkAnswerText } from "../../../test-support/openapi.ts";
import { controlPlaneOpenApi } from "./app.ts";
import {
  ADMIN_TOKEN,
  createTestControlPlane,
  type TenantIdentity,
  type TestControlPlane,
} from "./testing.ts";

let cp: TestControlPlane;
let tables: ReturnType<typeof tableDump>;
let attacker: TenantIdentity;
let victim: TenantIdentity;
let victimWorkspace: string;
let victimRows: string;
let ownWorkspace: string;

const SLUG = /^[a-z][a-z0-9-]{1,38}[a-z0-9]$/;

const spec = (workspaceId: string) => ({
  workspace_id: workspaceId,
  runtime: "echo",
  tier: 2,
  env: { API_KEY: "value" },
  secret_keys: ["API_KEY"],
  metadata: { team: "x" },
});

const backupReport = {
  slug: "attacker",
  outcome: "succeeded",
  location: "s3://molecule-backups/tenants/attacker/2026-01-01T00-00-00-000Z.dump",
  format: "pg_dump_custom",
  size_bytes: 1024,
  sha256: "0".repeat(64),
  started_at: "2026-01-01T00:00:00.000Z",
  finished_at: "2026-01-01T00:00:05.000Z",
};

interface Sent {
  method: string;
  path: string;
  body?: string;
  as: "admin" | "tenant";
}

/** Admin requests carry the admin token; tenant requests are signed by the attacker org over the exact bytes. */
let documented: AnswerChecker | undefined;

async function send(request: Sent): Promise<Answer> {
  if (request.as === "tenant") {
    const reply = await cp.tenant(attacker, request.method, request.path, {
      ...(request.body === undefined ? {} : { rawBody: request.body }),
    });
    return { status: reply.status, text: reply.text, headers: new Headers() };
  }
  const response = await cp.app.request(request.path, {
    method: request.method,
    headers: {
      authorization: `Bearer ${ADMIN_TOKEN}`,
      ...(request.body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(request.body === undefined ? {} : { body: request.body }),
  });
  return { status: response.status, text: await response.text(), headers: response.headers };
}

async function probe(request: Sent, mustRefuse: boolean): Promise<void> {
  const before = await tables.dump();
  const answer = await send(request);
  const what = `${request.as} ${request.method} ${JSON.stringify(request.path)} body=${JSON.stringify(request.body?.slice(0, 200))}`;
  // Every answer, refusals included, is what the OpenAPI document says for its route and status (the tenant caller
  // checks its own).
  documented ??= new AnswerChecker(controlPlaneOpenApi());
  checkAnswerText(
    documented,
    request.method,
    request.path,
    answer.status,
    answer.headers.get("content-type"),
    answer.text,
  );
  checkAnswer(answer, what);
  const normalised = resolvedByUrlParser(request.path);
  if (mustRefuse && !normalised) {
    expect(answer.status, `${what} must be refused: ${answer.text.slice(0, 200)}`).toBeGreaterThanOrEqual(
      400,
    );
  }
  if (answer.status >= 400) expect(await tables.dump(), `${what} changed state`).toBe(before);
}

const idSegment = fc.oneof(hostileId.map(enc), fc.constantFrom("%ED%A0%80", "%00", "..%2F..%2Fetc", "%"));
/** Neither an AMI pin's runtime nor its region (both of this shape at most). */
const pinSegment = fc.oneof(
  hostileString.filter((value) => !/^[a-z0-9][a-z0-9._-]{0,62}$/.test(value)).map(enc),
  fc.constantFrom("%00", "echo%00", "..%2F"),
);
const slugSegment = fc.oneof(
  hostileString.filter((value) => !SLUG.test(value)).map(enc),
  fc.constantFrom("%00", "acme%00", "..%2F"),
);

beforeAll(async () => {
  cp = await createTestControlPlane();
  tables = tableDump(cp.db.url, ["cp_request_nonces"]);
  victim = await cp.createOrg("victim");
  attacker = await cp.createOrg("attacker");
  await cp.runner.drain();
  victimWorkspace = cp.deps.ids.next("ws");
  const provisioned = await cp.tenant(victim, "POST", "/cp/workspaces/provision", {
    body: spec(victimWorkspace),
  });
  expect(provisioned.status).toBe(202);
  ownWorkspace = cp.deps.ids.next("ws");
  const own = await cp.tenant(attacker, "POST", "/cp/workspaces/provision", { body: spec(ownWorkspace) });
  expect(own.status).toBe(202);
  await cp.runner.drain();
  victimRows = await victimState();
});

afterAll(async () => {
  await tables?.close();
  await cp?.close();
});

/** The victim org's own rows: nothing the attacker sends may change them. */
async function victimState(): Promise<string> {
  const listed = await cp.tenant(victim, "GET", "/cp/workspaces");
  const org = await cp.admin("GET", "/cp/orgs/victim");
  return JSON.stringify({
    workspaces: listed.body,
    status: org.body?.org?.status ?? org.body?.provision_status,
  });
}

const ROUTES: Record<string, () => Promise<void>> = {
  // The API's description and its page are public and take no input: a hostile query string is ignored.
  ...Object.fromEntries(
    ["/openapi.json", "/docs"].map((path) => [
      `GET ${path}`,
      () =>
        fc.assert(
          fc.asyncProperty(hostileString, async (junk) =>
            probe({ as: "admin", method: "GET", path: `${path}?x=${enc(junk)}` }, false),
          ),
          fuzzParameters(),
        ),
    ]),
  ),
  "GET /health": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ as: "admin", method: "GET", path: `/health?x=${enc(junk)}` }, false),
      ),
      fuzzParameters(),
    ),
  "POST /cp/orgs": () =>
    fc.assert(
      fc.asyncProperty(rawBody(mutatedBody({ slug: "fuzz-org", name: "Fuzz" })), async (body) => {
        const stored = storedPart(body, { slug: 1, name: 1 });
        const slug = (stored as { slug?: unknown } | undefined)?.slug;
        await probe(
          { as: "admin", method: "POST", path: "/cp/orgs", body },
          holdsUnstorableText(stored) || (typeof slug === "string" && !SLUG.test(slug)),
        );
      }),
      fuzzParameters(),
    ),
  // The admin reconcile and stats take no input: hostile query strings and bodies are ignored, never stored.
  "POST /cp/admin/reconcile": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe(
          {
            as: "admin",
            method: "POST",
            path: `/cp/admin/reconcile?x=${enc(junk)}`,
            body: JSON.stringify({ junk }),
          },
          false,
        ),
      ),
      fuzzParameters(),
    ),
  "GET /cp/admin/stats": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ as: "admin", method: "GET", path: `/cp/admin/stats?x=${enc(junk)}` }, false),
      ),
      fuzzParameters(),
    ),
  "GET /metrics": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ as: "admin", method: "GET", path: `/metrics?x=${enc(junk)}` }, false),
      ),
      fuzzParameters(),
    ),
  "GET /cp/admin/backups": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ as: "admin", method: "GET", path: `/cp/admin/backups?x=${enc(junk)}` }, false),
      ),
      fuzzParameters(),
    ),
  // Tenant lifecycle: a hostile slug is refused; a fuzzed redeploy body goes to an org that does not exist, so even
  // a valid one is refused (404) and nothing is queued that would wait for a tenant no test plays.
  "POST /cp/admin/tenants/:slug/stop": () => slugRoute("POST", (slug) => `/cp/admin/tenants/${slug}/stop`),
  "POST /cp/admin/tenants/:slug/start": () => slugRoute("POST", (slug) => `/cp/admin/tenants/${slug}/start`),
  "POST /cp/admin/tenants/:slug/redeploy": async () => {
    await slugRoute("POST", (slug) => `/cp/admin/tenants/${slug}/redeploy`, "{}");
    await fc.assert(
      fc.asyncProperty(rawBody(mutatedBody({ image: "ghcr.io/acme/tenant:1" })), async (body) =>
        probe({ as: "admin", method: "POST", path: "/cp/admin/tenants/no-such-org/redeploy", body }, true),
      ),
      fuzzParameters(),
    );
  },
  "PATCH /cp/admin/orgs/:slug": async () => {
    await slugRoute("PATCH", (slug) => `/cp/admin/orgs/${slug}`, JSON.stringify({ is_canary: true }));
    await fc.assert(
      fc.asyncProperty(rawBody(mutatedBody({ is_canary: true })), async (body) =>
        probe({ as: "admin", method: "PATCH", path: "/cp/admin/orgs/attacker", body }, false),
      ),
      fuzzParameters(),
    );
  },
  "GET /cp/admin/ami-pins": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ as: "admin", method: "GET", path: `/cp/admin/ami-pins?x=${enc(junk)}` }, false),
      ),
      fuzzParameters(),
    ),
  "PUT /cp/admin/ami-pins/:runtime/:region": async () => {
    await fc.assert(
      fc.asyncProperty(pinSegment, fc.boolean(), async (segment, first) =>
        probe(
          {
            as: "admin",
            method: "PUT",
            path: first ? `/cp/admin/ami-pins/${segment}/us-east-1` : `/cp/admin/ami-pins/echo/${segment}`,
            body: JSON.stringify({ ami_id: "ami-0123abcd" }),
          },
          true,
        ),
      ),
      fuzzParameters(),
    );
    await fc.assert(
      fc.asyncProperty(rawBody(mutatedBody({ ami_id: "ami-0123abcd" })), async (body) => {
        const stored = storedPart(body, { ami_id: 1 }) as { ami_id?: unknown } | undefined;
        const ami = stored?.ami_id;
        await probe(
          { as: "admin", method: "PUT", path: "/cp/admin/ami-pins/echo/us-east-1", body },
          typeof ami === "string" && !/^ami-[0-9a-f]{8,17}$/.test(ami),
        );
      }),
      fuzzParameters(),
    );
  },
  "DELETE /cp/admin/ami-pins/:runtime/:region": () =>
    fc.assert(
      fc.asyncProperty(pinSegment, async (segment) =>
        probe({ as: "admin", method: "DELETE", path: `/cp/admin/ami-pins/${segment}/us-east-1` }, true),
      ),
      fuzzParameters(),
    ),
  // A valid body queues a rollout (of no ready tenant here; the rollout runner is not started) or answers a plan.
  "POST /cp/admin/tenants/workspaces/redeploy-fleet": () =>
    fc.assert(
      fc.asyncProperty(
        rawBody(mutatedBody({ canary_slugs: ["victim"], batch_size: 2, soak_seconds: 0, dry_run: true })),
        async (body) =>
          probe(
            { as: "admin", method: "POST", path: "/cp/admin/tenants/workspaces/redeploy-fleet", body },
            false,
          ),
      ),
      fuzzParameters(),
    ),
  "POST /cp/admin/tenants/:slug/workspaces/redeploy": () =>
    fc.assert(
      fc.asyncProperty(slugSegment, rawBody(mutatedBody({ dry_run: true })), async (slug, body) =>
        probe(
          { as: "admin", method: "POST", path: `/cp/admin/tenants/${slug}/workspaces/redeploy`, body },
          true,
        ),
      ),
      fuzzParameters(),
    ),
  "GET /cp/admin/rollouts": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ as: "admin", method: "GET", path: `/cp/admin/rollouts?x=${enc(junk)}` }, false),
      ),
      fuzzParameters(),
    ),
  "GET /cp/admin/rollouts/:id": () =>
    fc.assert(
      fc.asyncProperty(idSegment, async (id) =>
        probe({ as: "admin", method: "GET", path: `/cp/admin/rollouts/${id}` }, true),
      ),
      fuzzParameters(),
    ),
  "POST /cp/admin/rollouts/:id/cancel": () =>
    fc.assert(
      fc.asyncProperty(idSegment, async (id) =>
        probe({ as: "admin", method: "POST", path: `/cp/admin/rollouts/${id}/cancel` }, true),
      ),
      fuzzParameters(),
    ),
  // A stream that stays open: each hostile query string still opens it (and changes nothing); it is closed at once.
  "GET /cp/admin/events": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) => {
        const before = await tables.dump();
        const response = await cp.app.request(`/cp/admin/events?x=${enc(junk)}`, {
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        });
        expect(response.status).toBe(200);
        expect(response.headers.get("content-type")).toContain("text/event-stream");
        await response.body?.cancel();
        expect(await tables.dump()).toBe(before);
      }),
      fuzzParameters(),
    ),
  "GET /cp/orgs": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ as: "admin", method: "GET", path: `/cp/orgs?cursor=${enc(junk)}` }, false),
      ),
      fuzzParameters(),
    ),
  "GET /cp/orgs/:slug": () =>
    fc.assert(
      fc.asyncProperty(slugSegment, async (slug) =>
        probe({ as: "admin", method: "GET", path: `/cp/orgs/${slug}` }, true),
      ),
      fuzzParameters(),
    ),
  "GET /cp/orgs/:slug/pools": () =>
    fc.assert(
      fc.asyncProperty(slugSegment, async (slug) =>
        probe({ as: "admin", method: "GET", path: `/cp/orgs/${slug}/pools` }, true),
      ),
      fuzzParameters(),
    ),
  "PUT /cp/orgs/:slug/pools": async () => {
    await fc.assert(
      fc.asyncProperty(slugSegment, async (slug) =>
        probe(
          {
            as: "admin",
            method: "PUT",
            path: `/cp/orgs/${slug}/pools`,
            body: JSON.stringify({ runtime: "echo", tier: 2, size: 1 }),
          },
          true,
        ),
      ),
      fuzzParameters(),
    );
    // A slug that could be an org's but is none: a bad body is a 400, a good one a 404; no tenant is asked.
    await fc.assert(
      fc.asyncProperty(rawBody(mutatedBody({ runtime: "echo", tier: 2, size: 1 })), async (body) =>
        probe({ as: "admin", method: "PUT", path: "/cp/orgs/no-such-org/pools", body }, true),
      ),
      fuzzParameters(),
    );
  },
  "DELETE /cp/orgs/:slug": () =>
    fc.assert(
      fc.asyncProperty(slugSegment, rawBody(mutatedBody({ confirm: "x" })), async (slug, body) =>
        probe({ as: "admin", method: "DELETE", path: `/cp/orgs/${slug}`, body }, true),
      ),
      fuzzParameters(),
    ),
  "POST /cp/workspaces/provision": () =>
    fc.assert(
      fc.asyncProperty(rawBody(mutatedBody(spec("ws_placeholder"))), async (raw) => {
        // A fresh valid id each time, so a mutation that keeps the spec valid provisions a new workspace of its own.
        const body = raw.replace("ws_placeholder", cp.deps.ids.next("ws"));
        const stored = storedPart(body, spec("x")) as { workspace_id?: unknown } | undefined;
        const id = stored?.workspace_id;
        await probe(
          { as: "tenant", method: "POST", path: "/cp/workspaces/provision", body },
          holdsUnstorableText(stored) || (typeof id === "string" && !/^ws_[0-9a-z]{26}$/.test(id)),
        );
      }),
      fuzzParameters(),
    ),
  "POST /cp/workspaces/:id/start": async () => {
    await idRoute("POST", (id) => `/cp/workspaces/${id}/start`, JSON.stringify({ spec: spec(ownWorkspace) }));
    await fc.assert(
      fc.asyncProperty(rawBody(mutatedBody({ spec: spec(ownWorkspace), recreate: false })), async (body) =>
        probe({ as: "tenant", method: "POST", path: `/cp/workspaces/${ownWorkspace}/start`, body }, false),
      ),
      fuzzParameters(),
    );
  },
  "POST /cp/workspaces/:id/stop": () => idRoute("POST", (id) => `/cp/workspaces/${id}/stop`),
  "POST /cp/workspaces/:id/suspend": () => idRoute("POST", (id) => `/cp/workspaces/${id}/suspend`),
  "DELETE /cp/workspaces/:id": () => idRoute("DELETE", (id) => `/cp/workspaces/${id}`),
  "GET /cp/workspaces/:id/status": () => idRoute("GET", (id) => `/cp/workspaces/${id}/status`),
  "GET /cp/workspaces": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ as: "tenant", method: "GET", path: `/cp/workspaces?state=${enc(junk)}` }, false),
      ),
      fuzzParameters(),
    ),
  "GET /cp/operations/:id": () => idRoute("GET", (id) => `/cp/operations/${id}`),
  "GET /cp/tenants/config": () =>
    fc.assert(
      fc.asyncProperty(hostileString, async (junk) =>
        probe({ as: "tenant", method: "GET", path: `/cp/tenants/config?x=${enc(junk)}` }, false),
      ),
      fuzzParameters(),
    ),
  "POST /cp/tenants/boot-event": () =>
    fc.assert(
      fc.asyncProperty(rawBody(mutatedBody({ stage: "listening", detail: "fine" })), async (body) =>
        probe(
          { as: "tenant", method: "POST", path: "/cp/tenants/boot-event", body },
          holdsUnstorableText(storedPart(body, { stage: 1, detail: 1 })),
        ),
      ),
      fuzzParameters(),
    ),
  // A report for another org (its slug) is always refused, like unstorable text.
  "POST /cp/tenants/backup-report": () =>
    fc.assert(
      fc.asyncProperty(rawBody(mutatedBody(backupReport)), async (body) => {
        const stored = storedPart(body, { slug: 1, location: 1, error: 1 }) as { slug?: unknown } | undefined;
        await probe(
          { as: "tenant", method: "POST", path: "/cp/tenants/backup-report", body },
          holdsUnstorableText(stored) || (stored?.slug !== undefined && stored.slug !== "attacker"),
        );
      }),
      fuzzParameters(),
    ),
};

/** An admin route whose `:slug` is hostile: always refused, nothing changes. */
function slugRoute(method: string, path: (slug: string) => string, body?: string): Promise<void> {
  return fc.assert(
    fc.asyncProperty(slugSegment, async (slug) =>
      probe({ as: "admin", method, path: path(slug), ...(body === undefined ? {} : { body }) }, true),
    ),
    fuzzParameters(),
  );
}

/** A tenant route whose `:id` is hostile, or is the victim org's workspace: always refused, nothing changes. */
function idRoute(method: string, path: (id: string) => string, body?: string): Promise<void> {
  return fc.assert(
    fc.asyncProperty(
      fc.oneof({ weight: 5, arbitrary: idSegment }, { weight: 1, arbitrary: fc.constant("victim") }),
      async (id) => {
        const target = id === "victim" ? victimWorkspace : id;
        const sent = body?.replace(ownWorkspace, target);
        await probe(
          { as: "tenant", method, path: path(target), ...(sent === undefined ? {} : { body: sent }) },
          true,
        );
      },
    ),
    fuzzParameters(),
  );
}

describe("fuzzing every control-plane route with hostile input", () => {
  fuzzEveryRoute(ROUTES, () => cp.app);

  it("runs what it accepted without dying, leaves the victim org untouched, and stays healthy", async () => {
    await cp.runner.drain();
    expect(await victimState()).toBe(victimRows);
    expect((await cp.admin("GET", "/health")).status).toBe(200);
    const listed = await cp.tenant(attacker, "GET", "/cp/workspaces");
    expect(listed.status).toBe(200);
  });
});

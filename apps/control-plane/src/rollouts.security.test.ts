/**
 * The rollout routes' guard and input checks, and cancelling a rollout before it runs: real PostgreSQL, the app in
 * process, no tenant reached (refused requests stop before any tenant is called). Rollouts over real tenants are in
 * e2e/workspace-redeploy.test.ts.
 */

import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cpOrgs, cpRollouts } from "./db/schema.ts";
import { ADMIN_TOKEN, createTestControlPlane, type Reply, type TestControlPlane } from "./testing.ts";

let cp: TestControlPlane;

beforeAll(async () => {
  cp = await createTestControlPlane();
  await cp.createOrg("provisioning-org");
  const ready = await cp.createOrg("ready-org");
  // Ready with a tenant address nothing listens on: refused requests must not get as far as calling it.
  await cp.deps.db
    .update(cpOrgs)
    .set({ status: "ready", tenantUrl: "http://127.0.0.1:9" })
    .where(eq(cpOrgs.id, ready.orgId));
});

afterAll(() => cp?.close());

const FLEET = "/cp/admin/tenants/workspaces/redeploy-fleet";
const rolloutCount = async () => (await cp.deps.db.select().from(cpRollouts)).length;

/** An admin POST of `body` (sent as is when a string); the answer with its JSON read. */
async function post(
  path: string,
  body: unknown,
): Promise<{ status: number; json(): Promise<Reply["body"]> }> {
  const response = await cp.app.request(path, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN_TOKEN}` },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: response.status, json: () => response.json() as Promise<Reply["body"]> };
}

describe("rollout routes: who may call them", () => {
  it.each([
    ["POST", FLEET],
    ["POST", "/cp/admin/tenants/ready-org/workspaces/redeploy"],
    ["GET", "/cp/admin/rollouts"],
    ["GET", "/cp/admin/rollouts/op_0000000000aaaaaaaaaaaaaaaa"],
    ["POST", "/cp/admin/rollouts/op_0000000000aaaaaaaaaaaaaaaa/cancel"],
    ["GET", "/cp/admin/events"],
  ])("%s %s refuses no token and a wrong one with 401, recording nothing", async (method, path) => {
    for (const authorization of [undefined, "Bearer not-the-admin-token-0123456789"]) {
      const response = await cp.app.request(path, {
        method,
        headers: authorization ? { authorization } : {},
        ...(method === "POST" ? { body: "{}" } : {}),
      });
      expect(response.status).toBe(401);
      const body = (await response.json()) as Reply["body"];
      expect(body.error.code).toBe("unauthorized");
      expect(body.error.requestId).toBeTruthy();
    }
    expect(await rolloutCount()).toBe(0);
  });
});

describe("rollout routes: bad input", () => {
  it.each([
    [{ batch_size: 0 }, "batch_size"],
    [{ batch_size: 101 }, "batch_size"],
    [{ soak_seconds: -1 }, "soak_seconds"],
    [{ soak_seconds: 1.5 }, "soak_seconds"],
    [{ canary_slugs: "ready-org" }, "canary_slugs"],
    [{ canary_slugs: ["Not A Slug"] }, "canary_slugs"],
    [{ canary_slugs: ["ready-org", "ready-org"] }, "canary_slugs"],
    [{ dry_run: "yes" }, "dry_run"],
    [{ surprise: true }, "surprise"],
  ])("fleet body %j is 400 naming %s, nothing recorded", async (body, field) => {
    const response = await post(FLEET, body);
    expect(response.status).toBe(400);
    const answer = await response.json();
    expect(answer.error.code).toBe("bad_request");
    expect(answer.error.message).toContain(field);
    expect(answer.error.requestId).toBeTruthy();
    expect(await rolloutCount()).toBe(0);
  });

  it("is 400 for a body that is not JSON and for a canary no org has, 409 for a canary not ready", async () => {
    expect((await post(FLEET, "{not json")).status).toBe(400);
    const unknown = await post(FLEET, { canary_slugs: ["nobody-here"] });
    expect(unknown.status).toBe(400);
    expect((await unknown.json()).error.message).toContain('no org with slug "nobody-here"');
    const notReady = await post(FLEET, { canary_slugs: ["provisioning-org"] });
    expect(notReady.status).toBe(409);
    expect((await notReady.json()).error.message).toContain("is not ready (provisioning)");
    expect(await rolloutCount()).toBe(0);
  });

  it("one tenant: unknown slug 404, malformed slug 400, not ready 409, unknown field 400", async () => {
    const unknown = await post("/cp/admin/tenants/nobody-here/workspaces/redeploy", {});
    expect(unknown.status).toBe(404);
    expect((await unknown.json()).error).toMatchObject({ code: "not_found" });
    expect((await post("/cp/admin/tenants/Bad_Slug/workspaces/redeploy", {})).status).toBe(400);
    expect((await post("/cp/admin/tenants/provisioning-org/workspaces/redeploy", {})).status).toBe(409);
    expect((await post("/cp/admin/tenants/ready-org/workspaces/redeploy", { image: "x" })).status).toBe(400);
    expect(await rolloutCount()).toBe(0);
  });

  it("a rollout id: malformed 400, unknown 404 (read and cancel)", async () => {
    const admin = (method: string, path: string) => cp.admin(method, path);
    expect((await admin("GET", "/cp/admin/rollouts/not-an-id")).status).toBe(400);
    expect((await admin("POST", "/cp/admin/rollouts/not-an-id/cancel")).status).toBe(400);
    const unknown = "op_0000000000aaaaaaaaaaaaaaaa";
    expect((await admin("GET", `/cp/admin/rollouts/${unknown}`)).status).toBe(404);
    expect((await admin("POST", `/cp/admin/rollouts/${unknown}/cancel`)).status).toBe(404);
  });
});

describe("a rollout cancelled before it runs", () => {
  it("ends cancelled at once; the runner then finds nothing to do; a second cancel is 409", async () => {
    const queued = await post(FLEET, { batch_size: 3 });
    expect(queued.status).toBe(202);
    const { rollout } = await queued.json();
    expect(rollout).toMatchObject({ scope: "fleet", status: "pending", dry_run: false, batch_size: 3 });
    expect(rollout.tenants.map((tenant: { slug: string }) => tenant.slug)).toEqual(["ready-org"]);

    const cancelled = await cp.admin("POST", `/cp/admin/rollouts/${rollout.id}/cancel`);
    expect(cancelled.status).toBe(202);
    expect(cancelled.body.rollout).toMatchObject({
      status: "cancelled",
      cancel_requested: true,
      error: { code: "cancelled" },
    });
    expect(await cp.rollouts.drain()).toBe(0);
    const read = await cp.admin("GET", `/cp/admin/rollouts/${rollout.id}`);
    expect(read.body.rollout.status).toBe("cancelled");
    expect(read.body.rollout.tenants[0].status).toBe("pending");
    expect((await cp.admin("POST", `/cp/admin/rollouts/${rollout.id}/cancel`)).status).toBe(409);
    const listed = await cp.admin("GET", "/cp/admin/rollouts");
    expect(listed.body.rollouts.map((item: { id: string }) => item.id)).toEqual([rollout.id]);
  });
});

/**
 * Workspace and operation ids a tenant sends: only minted ids pass, in a body or in a path. Anything else is a 400
 * with the error envelope before any lookup, nothing is stored or queued, no backend is asked, and the service keeps
 * answering (a path-like id once crash-looped the control plane through the Docker client).
 */
import { createIdGenerator, ErrorEnvelope, isId } from "@molecule/contracts";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HOSTILE_WORKSPACE_IDS } from "../../../test-support/hostile-ids.ts";
import {
  createTestControlPlane,
  type Reply,
  type TenantIdentity,
  type TestControlPlane,
  workspaceSpec,
} from "./testing.ts";

const ids = createIdGenerator();
let cp: TestControlPlane;
let fake: FakeProvisioner;
let org: TenantIdentity;

beforeAll(async () => {
  fake = createFakeProvisioner();
  cp = await createTestControlPlane({ provisioner: fake });
  org = await cp.createOrg("idsorg");
  await cp.runner.drain();
});
afterAll(() => cp.close());

function expectRefused(reply: Reply, status: number, what: string): void {
  expect(reply.status, `${what}: ${reply.text}`).toBe(status);
  const envelope = ErrorEnvelope.parse(reply.body);
  expect(envelope.error.requestId).toBeTruthy();
}

/** The service still does its work: a valid provision is accepted, run and visible. */
async function stillServes(): Promise<void> {
  expect((await cp.app.request("/health")).status).toBe(200);
  const id = ids.next("ws");
  const accepted = await cp.tenant(org, "POST", "/cp/workspaces/provision", { body: workspaceSpec(id) });
  expect(accepted.status).toBe(202);
  await cp.runner.drain();
  const shown = await cp.tenant(org, "GET", `/cp/operations/${accepted.body.operation.id}`);
  expect(shown.body).toMatchObject({ status: "succeeded", workspace_id: id });
}

describe("workspace ids a tenant sends", () => {
  it("a provision or start whose spec carries anything but a minted workspace id is a 400; nothing changes", async () => {
    const existing = ids.next("ws");
    expect(
      (await cp.tenant(org, "POST", "/cp/workspaces/provision", { body: workspaceSpec(existing) })).status,
    ).toBe(202);
    await cp.runner.drain();
    const before = await cp.snapshot({ exceptNonces: true });
    const backendBefore = JSON.stringify(fake.workspaces());

    for (const bad of HOSTILE_WORKSPACE_IDS) {
      const what = JSON.stringify(bad);
      const provision = await cp.tenant(org, "POST", "/cp/workspaces/provision", {
        body: workspaceSpec(bad),
      });
      expectRefused(provision, 400, `provision ${what}`);
      expect(provision.body.error).toMatchObject({ code: "bad_request" });
      expect(provision.body.error.message).toContain("workspace_id");
      if (bad.length > 3) expect(provision.text).not.toContain(JSON.stringify(bad).slice(1, -1));

      const start = await cp.tenant(org, "POST", `/cp/workspaces/${existing}/start`, {
        body: { spec: workspaceSpec(bad) },
      });
      expectRefused(start, 400, `start ${what}`);
    }
    await cp.runner.drain();
    expect(await cp.snapshot({ exceptNonces: true })).toBe(before);
    expect(JSON.stringify(fake.workspaces())).toBe(backendBefore);
    expect(fake.inspect("../../etc")).toBeUndefined();
    await stillServes();
  });

  it("every :id route refuses a malformed id before any lookup; nothing changes", async () => {
    const existing = ids.next("ws");
    expect(
      (await cp.tenant(org, "POST", "/cp/workspaces/provision", { body: workspaceSpec(existing) })).status,
    ).toBe(202);
    await cp.runner.drain();
    const before = await cp.snapshot({ exceptNonces: true });
    const routes: [string, (id: string) => string, unknown?][] = [
      ["POST", (id) => `/cp/workspaces/${id}/start`, { spec: workspaceSpec(existing) }],
      ["POST", (id) => `/cp/workspaces/${id}/stop`, {}],
      ["POST", (id) => `/cp/workspaces/${id}/suspend`, {}],
      ["DELETE", (id) => `/cp/workspaces/${id}`],
      ["GET", (id) => `/cp/workspaces/${id}/status`],
      ["GET", (id) => `/cp/operations/${id}`],
    ];
    for (const bad of [...HOSTILE_WORKSPACE_IDS, ids.next("op"), ids.next("org")]) {
      for (const [method, route, body] of routes) {
        const path = route(encodeURIComponent(bad));
        const reply = await cp.tenant(org, method, path, body === undefined ? {} : { body });
        const what = `${method} ${path}`;
        const isOperationRoute = path.startsWith("/cp/operations/");
        if (isOperationRoute ? isId("op", bad) : isId("ws", bad)) {
          expectRefused(reply, 404, what); // well-formed, but not this org's
        } else if (new URL(path, "http://cp").pathname !== path || bad === "") {
          // The URL parser or the router already makes this another path (`..`, an empty segment): refused there.
          expect(reply.status, what).toBeGreaterThanOrEqual(400);
          expect(reply.status, what).toBeLessThan(500);
        } else {
          expectRefused(reply, 400, what);
          expect(reply.body.error.code).toBe("bad_request");
          expect(reply.body.error.message).toMatch(/(workspace|operation) id in the path/);
        }
      }
    }
    await cp.runner.drain();
    expect(await cp.snapshot({ exceptNonces: true })).toBe(before);
    await stillServes();
  });
});

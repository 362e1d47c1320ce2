import { CpAccepted, CpOperationView, CpRuntimeStatus, TenantRuntimeConfig } from "@molecule/contracts";
import { ProvisionerError } from "@molecule/provisioner-core";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOperationRunner } from "./app.ts";
import { cpOperations, cpWorkspaces } from "./db/schema.ts";
import { createTestControlPlane, type TenantIdentity, type TestControlPlane } from "./testing.ts";

let cp: TestControlPlane;
let fake: FakeProvisioner;
let org: TenantIdentity;
let seq = 0;

const newId = () => `ws_01jcptest${String(++seq).padStart(17, "0")}`;
const spec = (workspaceId: string, env: Record<string, string> = {}) => ({
  workspace_id: workspaceId,
  runtime: "echo",
  tier: 2,
  env: { WORKSPACE_ID: workspaceId, WORKSPACE_BOOT_TOKEN: "boot-secret-value", ...env },
  secret_keys: ["WORKSPACE_BOOT_TOKEN"],
  metadata: { team: "a" },
});

beforeAll(async () => {
  fake = createFakeProvisioner();
  cp = await createTestControlPlane({ provisioner: fake });
  org = await cp.createOrg("wsorg");
  await cp.runner.drain();
});
afterAll(() => cp.close());

async function provisioned(workspaceId = newId()) {
  const accepted = await cp.tenant(org, "POST", "/cp/workspaces/provision", { body: spec(workspaceId) });
  expect(accepted.status).toBe(202);
  await cp.runner.drain();
  return workspaceId;
}

async function operation(id: string) {
  const shown = await cp.tenant(org, "GET", `/cp/operations/${id}`);
  expect(shown.status).toBe(200);
  return CpOperationView.parse(shown.body);
}

describe("workspaces on behalf of a tenant", () => {
  it("provision → 202 with the operation; the runner runs it on the workspace backend for the caller's org", async () => {
    const id = newId();
    const accepted = await cp.tenant(org, "POST", "/cp/workspaces/provision", { body: spec(id) });
    expect(accepted.status).toBe(202);
    const view = CpAccepted.parse(accepted.body).operation;
    expect(view).toMatchObject({ workspace_id: id, kind: "provision", status: "pending", error: null });
    expect(accepted.text).not.toContain("boot-secret-value");
    const [row] = await cp.db.db.select().from(cpOperations).where(eq(cpOperations.id, view.id));
    expect(row?.sealedInput).toBeTruthy();
    expect(JSON.stringify(row)).not.toContain("boot-secret-value");

    await cp.runner.drain();
    const done = await operation(view.id);
    expect(done.status).toBe("succeeded");
    expect(done.steps.map((step) => step.name)).toEqual([
      "image_ready",
      "volume_ready",
      "instance_created",
      "instance_started",
    ]);
    const state = fake.inspect(id);
    expect(state).toMatchObject({ orgId: org.orgId, deployment: "cp-test" });
    expect(state?.instance?.env.WORKSPACE_BOOT_TOKEN).toBe("boot-secret-value");

    const status = await cp.tenant(org, "GET", `/cp/workspaces/${id}/status`);
    expect(CpRuntimeStatus.parse(status.body)).toEqual({ state: "running" });
    const listed = await cp.tenant(org, "GET", "/cp/workspaces");
    expect(listed.body.workspaces).toContainEqual({ workspace_id: id, state: "running" });
  });

  it("stop, suspend, start (recreate with the new spec) and destroy", async () => {
    const id = await provisioned();
    const stop = await cp.tenant(org, "POST", `/cp/workspaces/${id}/stop`, { body: {} });
    expect(stop.status).toBe(202);
    await cp.runner.drain();
    expect(fake.inspect(id)?.instance?.state).toBe("stopped");

    const start = await cp.tenant(org, "POST", `/cp/workspaces/${id}/start`, {
      body: { spec: spec(id, { API_KEY: "rotated" }), recreate: true },
    });
    expect(start.status).toBe(202);
    await cp.runner.drain();
    expect(fake.inspect(id)?.instance).toMatchObject({ state: "running", env: { API_KEY: "rotated" } });

    const suspend = await cp.tenant(org, "POST", `/cp/workspaces/${id}/suspend`, { body: {} });
    await cp.runner.drain();
    expect((await operation(suspend.body.operation.id)).result).toEqual({ suspended: true });
    expect(fake.inspect(id)?.instance?.state).toBe("suspended");

    const destroy = await cp.tenant(org, "DELETE", `/cp/workspaces/${id}`);
    expect(destroy.status).toBe(202);
    expect(destroy.body.operation.kind).toBe("destroy");
    await cp.runner.drain();
    expect(fake.inspect(id)).toBeUndefined();
    expect((await operation(destroy.body.operation.id)).status).toBe("succeeded");
    const listed = await cp.tenant(org, "GET", "/cp/workspaces");
    expect(listed.body.workspaces.map((w: { workspace_id: string }) => w.workspace_id)).not.toContain(id);
    expect((await cp.tenant(org, "GET", `/cp/workspaces/${id}/status`)).body).toMatchObject({
      state: "missing",
    });

    // A retried destroy of a destroyed workspace is accepted and succeeds again.
    const again = await cp.tenant(org, "DELETE", `/cp/workspaces/${id}`);
    expect(again.status).toBe(202);
    await cp.runner.drain();
    expect((await operation(again.body.operation.id)).status).toBe("succeeded");
  });

  it("unknown workspace ids are 404 for lifecycle calls, status and delete", async () => {
    const id = newId();
    const before = await cp.snapshot({ exceptNonces: true });
    for (const [method, path, body] of [
      ["POST", `/cp/workspaces/${id}/stop`, {}],
      ["POST", `/cp/workspaces/${id}/suspend`, {}],
      ["POST", `/cp/workspaces/${id}/start`, { spec: spec(id) }],
      ["DELETE", `/cp/workspaces/${id}`, undefined],
      ["GET", `/cp/workspaces/${id}/status`, undefined],
      ["GET", "/cp/operations/op_01jcpunknown00000000000000", undefined],
    ] as const) {
      const reply = await cp.tenant(org, method, path, body === undefined ? {} : { body });
      expect(reply.status, `${method} ${path}`).toBe(404);
      expect(reply.body.error.code).toBe("not_found");
    }
    expect(await cp.snapshot({ exceptNonces: true })).toBe(before);
  });

  it("refuses bad bodies, a start whose spec names another workspace, and mutating calls without Idempotency-Key", async () => {
    const id = await provisioned();
    const before = await cp.snapshot({ exceptNonces: true });
    const cases = [
      { path: "/cp/workspaces/provision", body: { ...spec(newId()), tier: 9 } },
      { path: "/cp/workspaces/provision", body: { ...spec(newId()), env: { "bad key": "x" } } },
      { path: `/cp/workspaces/${id}/start`, body: { spec: spec(newId()) } },
      { path: `/cp/workspaces/${id}/start`, body: {} },
    ];
    for (const { path, body } of cases) {
      const reply = await cp.tenant(org, "POST", path, { body });
      expect(reply.status, path).toBe(400);
      expect(reply.body.error.code).toBe("bad_request");
    }
    const notJson = await cp.tenant(org, "POST", "/cp/workspaces/provision", { rawBody: "{not json" });
    expect(notJson.status).toBe(400);
    for (const [method, path, body] of [
      ["POST", "/cp/workspaces/provision", spec(newId())],
      ["POST", `/cp/workspaces/${id}/stop`, {}],
      ["DELETE", `/cp/workspaces/${id}`, undefined],
    ] as const) {
      const reply = await cp.tenant(org, method, path, { idempotencyKey: null, ...(body ? { body } : {}) });
      expect(reply.status).toBe(400);
      expect(reply.body.error.message).toContain("Idempotency-Key");
    }
    expect(await cp.snapshot({ exceptNonces: true })).toBe(before);
  });

  it("Idempotency-Key: same key and body → the same operation; same key, other body → 409", async () => {
    const id = newId();
    const body = spec(id);
    const first = await cp.tenant(org, "POST", "/cp/workspaces/provision", {
      body,
      idempotencyKey: "prov-1",
    });
    const second = await cp.tenant(org, "POST", "/cp/workspaces/provision", {
      body,
      idempotencyKey: "prov-1",
    });
    expect(first.status).toBe(202);
    expect(second.status).toBe(202);
    expect(second.body.operation.id).toBe(first.body.operation.id);
    const other = await cp.tenant(org, "POST", "/cp/workspaces/provision", {
      body: spec(id, { EXTRA: "1" }),
      idempotencyKey: "prov-1",
    });
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe("idempotency_key_reused");
    const sameKeyOtherRoute = await cp.tenant(org, "POST", `/cp/workspaces/${id}/stop`, {
      body: {},
      idempotencyKey: "prov-1",
    });
    expect(sameKeyOtherRoute.status).toBe(409);
    const rows = await cp.db.db.select().from(cpOperations).where(eq(cpOperations.workspaceId, id));
    expect(rows).toHaveLength(1);
    await cp.runner.drain();
  });

  it("tenant config names the workspace backend and its capabilities", async () => {
    const config = await cp.tenant(org, "GET", "/cp/tenants/config");
    expect(config.status).toBe(200);
    expect(TenantRuntimeConfig.parse(config.body)).toEqual({
      org_id: org.orgId,
      slug: "wsorg",
      workspace_backend: "fake",
      capabilities: { suspend: true },
      settings: {},
    });
  });
});

describe("the operation runner", () => {
  it("retries a retryable backend error with backoff, recording the error meanwhile", async () => {
    const id = newId();
    fake.failNext("provision", new ProvisionerError("capacity", "no capacity right now", true));
    const accepted = await cp.tenant(org, "POST", "/cp/workspaces/provision", { body: spec(id) });
    await cp.runner.drain();
    let view = await operation(accepted.body.operation.id);
    expect(view.status).toBe("pending");
    expect(view.error).toEqual({ code: "capacity", message: "no capacity right now", retryable: true });
    expect(fake.inspect(id)).toBeUndefined();
    expect(await cp.runner.drain()).toBe(0); // backing off
    cp.clock.advance(1_500);
    await cp.runner.drain();
    view = await operation(accepted.body.operation.id);
    expect(view).toMatchObject({ status: "succeeded", error: null });
    const [row] = await cp.db.db.select().from(cpOperations).where(eq(cpOperations.id, view.id));
    expect(row?.attempts).toBe(2);
    expect(fake.inspect(id)?.instance?.state).toBe("running");
  });

  it("fails at once on a non-retryable error and marks the workspace failed", async () => {
    const id = newId();
    fake.failNext("provision", new ProvisionerError("invalid_spec", "bad spec", false));
    const accepted = await cp.tenant(org, "POST", "/cp/workspaces/provision", { body: spec(id) });
    await cp.runner.drain();
    const view = await operation(accepted.body.operation.id);
    expect(view).toMatchObject({ status: "failed", error: { code: "invalid_spec", retryable: false } });
    const listed = await cp.tenant(org, "GET", "/cp/workspaces");
    expect(listed.body.workspaces).toContainEqual({ workspace_id: id, state: "failed" });
  });

  it("runs one operation per workspace at a time, in order", async () => {
    const id = await provisioned();
    const stop = await cp.tenant(org, "POST", `/cp/workspaces/${id}/stop`, { body: {} });
    const start = await cp.tenant(org, "POST", `/cp/workspaces/${id}/start`, { body: { spec: spec(id) } });
    const first = await cp.runner.claim();
    expect(first?.id).toBe(stop.body.operation.id);
    expect(await cp.runner.claim()).toBeNull(); // the start waits for the stop
    if (first) await cp.runner.execute(first);
    await cp.runner.drain();
    expect((await operation(start.body.operation.id)).status).toBe("succeeded");
    expect(fake.inspect(id)?.instance?.state).toBe("running");
  });

  it("a stop, suspend or start queued behind a destroy is superseded: the destroyed workspace stays destroyed", async () => {
    const id = await provisioned();
    const destroy = await cp.tenant(org, "DELETE", `/cp/workspaces/${id}`);
    const later = [
      await cp.tenant(org, "POST", `/cp/workspaces/${id}/stop`, { body: {} }),
      await cp.tenant(org, "POST", `/cp/workspaces/${id}/start`, { body: { spec: spec(id) } }),
      await cp.tenant(org, "POST", `/cp/workspaces/${id}/suspend`, { body: {} }),
    ];
    for (const accepted of later) expect(accepted.status).toBe(202);
    await cp.runner.drain();

    expect((await operation(destroy.body.operation.id)).status).toBe("succeeded");
    for (const accepted of later) {
      expect(await operation(accepted.body.operation.id)).toMatchObject({
        status: "failed",
        error: { code: "superseded", message: "the workspace was destroyed" },
      });
    }
    expect(fake.inspect(id)).toBeUndefined();
    const [row] = await cp.db.db.select().from(cpWorkspaces).where(eq(cpWorkspaces.id, id));
    expect(row?.state).toBe("destroyed");
    const listed = await cp.tenant(org, "GET", "/cp/workspaces");
    expect(listed.body.workspaces.map((w: { workspace_id: string }) => w.workspace_id)).not.toContain(id);
  });

  it("resumes an operation whose runner died once its lease expires, and converges on one workspace", async () => {
    const id = newId();
    fake.crashAfterStep("volume_ready");
    const accepted = await cp.tenant(org, "POST", "/cp/workspaces/provision", { body: spec(id) });
    // The first process claims the operation and dies part-way through: the volume exists, the lease is held.
    const dead = createOperationRunner(cp.deps, "dead-process");
    const claimed = await dead.claim();
    expect(claimed?.id).toBe(accepted.body.operation.id);
    await fake
      .provision(
        {
          workspaceId: id,
          orgId: org.orgId,
          deployment: "cp-test",
          runtime: "echo",
          tier: 2,
          env: {},
          secretKeys: [],
          metadata: {},
        },
        null,
      )
      .catch(() => {});
    expect(fake.inspect(id)?.volume).toBeTruthy();
    expect(fake.inspect(id)?.instance).toBeNull();

    const survivor = createOperationRunner(cp.deps, "survivor");
    expect(await survivor.drain()).toBe(0); // lease still held
    cp.clock.advance(cp.deps.settings.operationLeaseMs + 1_000);
    expect(await survivor.drain()).toBe(1);
    const view = await operation(accepted.body.operation.id);
    expect(view.status).toBe("succeeded");
    const [row] = await cp.db.db.select().from(cpOperations).where(eq(cpOperations.id, view.id));
    expect(row).toMatchObject({ attempts: 2, lockedBy: null });
    const state = fake.inspect(id);
    expect(state?.instance?.state).toBe("running");
    expect(state?.volume?.id).toBeTruthy();
    expect((await fake.listManaged()).filter((resource) => resource.workspaceId === id)).toHaveLength(2);
  });
});

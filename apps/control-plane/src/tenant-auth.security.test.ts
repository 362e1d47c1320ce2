import { deriveTenantSigningKey, SIGNATURE_WINDOW_SECONDS } from "@molecule/contracts";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cpRequestNonces } from "./db/schema.ts";
import {
  createTestControlPlane,
  SHARED_SECRET,
  type TenantIdentity,
  type TestControlPlane,
} from "./testing.ts";

let cp: TestControlPlane;
let fake: FakeProvisioner;
let alpha: TenantIdentity;
let beta: TenantIdentity;
let alphaWorkspace: string;
let alphaOperation: string;

const spec = (workspaceId: string) => ({
  workspace_id: workspaceId,
  runtime: "echo",
  tier: 2,
  env: { WORKSPACE_ID: workspaceId },
  secret_keys: [],
  metadata: {},
});

beforeAll(async () => {
  fake = createFakeProvisioner();
  cp = await createTestControlPlane({ provisioner: fake });
  alpha = await cp.createOrg("alpha-org");
  beta = await cp.createOrg("beta-org");
  await cp.runner.drain();
  alphaWorkspace = "ws_01jcpsecurity0000000000001";
  const accepted = await cp.tenant(alpha, "POST", "/cp/workspaces/provision", { body: spec(alphaWorkspace) });
  expect(accepted.status).toBe(202);
  alphaOperation = accepted.body.operation.id;
  await cp.runner.drain();
});
afterAll(() => cp.close());

/** Asserts a 401 with the envelope, a message naming only the kind of failure, and no change to any table. */
async function refused(call: () => ReturnType<TestControlPlane["tenant"]>, message: string) {
  const before = await cp.snapshot();
  const reply = await call();
  expect(reply.status).toBe(401);
  expect(reply.body.error.code).toBe("unauthorized");
  expect(reply.body.error.message).toBe(message);
  expect(reply.body.error.requestId).toMatch(/^req_/);
  expect(await cp.snapshot()).toBe(before);
  return reply;
}

const provisionBody = () =>
  spec(`ws_01jcpsecurity${String(Math.floor(Math.random() * 1e12)).padStart(13, "0")}`);

describe("signed tenant requests", () => {
  it("the control case: a correctly signed request is accepted", async () => {
    const reply = await cp.tenant(alpha, "GET", "/cp/workspaces");
    expect(reply.status).toBe(200);
  });

  it("refuses an absent credential", async () => {
    await refused(
      () => cp.tenant(alpha, "POST", "/cp/workspaces/provision", { body: provisionBody(), credential: null }),
      "a tenant credential is required",
    );
  });

  it("refuses a wrong credential, including another org's credential with this org's signature", async () => {
    await refused(
      () =>
        cp.tenant(alpha, "POST", "/cp/workspaces/provision", {
          body: provisionBody(),
          credential: "mct_forged",
        }),
      "unknown tenant credential",
    );
    await refused(
      () =>
        cp.tenant(alpha, "POST", "/cp/workspaces/provision", {
          body: provisionBody(),
          credential: beta.credential,
        }),
      "bad signature",
    );
  });

  it("refuses a bad signature: wrong key, the master secret itself, garbage, another method or path", async () => {
    const body = provisionBody();
    for (const signingKey of [deriveTenantSigningKey(SHARED_SECRET, beta.orgId), SHARED_SECRET, "k"]) {
      await refused(
        () => cp.tenant(alpha, "POST", "/cp/workspaces/provision", { body, signingKey }),
        "bad signature",
      );
    }
    await refused(
      () => cp.tenant(alpha, "POST", "/cp/workspaces/provision", { body, signature: "v1=00" }),
      "bad signature",
    );
    await refused(
      () => cp.tenant(alpha, "POST", "/cp/workspaces/provision", { body, signature: "" }),
      "bad signature",
    );
    // Signed for GET /cp/workspaces, sent as a provision.
    const nonce = "signed-for-another-route";
    const other = await import("@molecule/contracts").then(({ signRequest }) =>
      signRequest(deriveTenantSigningKey(SHARED_SECRET, alpha.orgId), {
        method: "GET",
        path: "/cp/workspaces",
        timestamp: String(Math.floor(cp.clock.now().getTime() / 1000)),
        nonce,
        body: "",
      }),
    );
    await refused(
      () => cp.tenant(alpha, "POST", "/cp/workspaces/provision", { body, nonce, signature: other }),
      "bad signature",
    );
  });

  it("refuses a body tampered with after signing", async () => {
    const signed = provisionBody();
    const tampered = JSON.stringify({ ...signed, tier: 4 });
    await refused(
      () => cp.tenant(alpha, "POST", "/cp/workspaces/provision", { body: signed, sendBody: tampered }),
      "bad signature",
    );
    // Same JSON value, different bytes (whitespace) is also a different body.
    await refused(
      () =>
        cp.tenant(alpha, "POST", "/cp/workspaces/provision", {
          body: signed,
          sendBody: JSON.stringify(signed, null, 1),
        }),
      "bad signature",
    );
  });

  it("refuses a timestamp outside the window, in the past and in the future, and a malformed one", async () => {
    const now = Math.floor(cp.clock.now().getTime() / 1000);
    for (const timestamp of [now - SIGNATURE_WINDOW_SECONDS - 1, now + SIGNATURE_WINDOW_SECONDS + 1, 0]) {
      await refused(
        () => cp.tenant(alpha, "POST", "/cp/workspaces/provision", { body: provisionBody(), timestamp }),
        "stale timestamp",
      );
    }
    // The edges of the window are accepted.
    for (const timestamp of [now - SIGNATURE_WINDOW_SECONDS, now + SIGNATURE_WINDOW_SECONDS]) {
      expect((await cp.tenant(alpha, "GET", "/cp/workspaces", { timestamp })).status).toBe(200);
    }
  });

  it("refuses a replayed request (same nonce), even with a fresh idempotency key; prunes expired nonces", async () => {
    const nonce = "replay-me-0123456789";
    const body = provisionBody();
    const first = await cp.tenant(alpha, "POST", "/cp/workspaces/provision", {
      body,
      nonce,
      idempotencyKey: "replay-key",
    });
    expect(first.status).toBe(202);
    await refused(
      () =>
        cp.tenant(alpha, "POST", "/cp/workspaces/provision", { body, nonce, idempotencyKey: "replay-key" }),
      "replayed request",
    );
    await refused(() => cp.tenant(alpha, "GET", "/cp/workspaces", { nonce }), "replayed request");
    // The same nonce from another org is that org's own nonce.
    expect((await cp.tenant(beta, "GET", "/cp/workspaces", { nonce })).status).toBe(200);

    const kept = await cp.db.db.select().from(cpRequestNonces);
    expect(kept.some((row) => row.nonce === nonce)).toBe(true);
    cp.clock.advance((2 * SIGNATURE_WINDOW_SECONDS + 1) * 1000);
    expect((await cp.tenant(alpha, "GET", "/cp/workspaces")).status).toBe(200);
    const pruned = await cp.db.db.select().from(cpRequestNonces);
    expect(pruned.map((row) => row.nonce)).not.toContain(nonce);
    expect(pruned).toHaveLength(1);
    await cp.runner.drain();
  });

  it("refuses a missing or malformed nonce", async () => {
    await refused(() => cp.tenant(alpha, "GET", "/cp/workspaces", { nonce: "" }), "bad signature");
    await refused(
      () => cp.tenant(alpha, "GET", "/cp/workspaces", { nonce: "a b c d e f g h" }),
      "bad signature",
    );
  });
});

describe("org isolation", () => {
  it("another org's workspace, status, operation and delete are 404, and nothing changes", async () => {
    const before = await cp.snapshot({ exceptNonces: true });
    for (const [method, path, body] of [
      ["GET", `/cp/workspaces/${alphaWorkspace}/status`, undefined],
      ["GET", `/cp/operations/${alphaOperation}`, undefined],
      ["POST", `/cp/workspaces/${alphaWorkspace}/stop`, {}],
      ["POST", `/cp/workspaces/${alphaWorkspace}/suspend`, {}],
      ["POST", `/cp/workspaces/${alphaWorkspace}/start`, { spec: spec(alphaWorkspace) }],
      ["DELETE", `/cp/workspaces/${alphaWorkspace}`, undefined],
    ] as const) {
      const reply = await cp.tenant(beta, method, path, body === undefined ? {} : { body });
      expect(reply.status, `${method} ${path}`).toBe(404);
      expect(reply.body.error.code).toBe("not_found");
      expect(reply.text).not.toContain(alpha.orgId);
    }
    const listed = await cp.tenant(beta, "GET", "/cp/workspaces");
    expect(listed.body.workspaces).toEqual([]);
    expect(await cp.snapshot({ exceptNonces: true })).toBe(before);
    expect(fake.inspect(alphaWorkspace)?.instance?.state).toBe("running");
  });

  it("provisioning a workspace id another org holds is refused (409, generic) without touching it", async () => {
    const before = await cp.snapshot({ exceptNonces: true });
    const reply = await cp.tenant(beta, "POST", "/cp/workspaces/provision", { body: spec(alphaWorkspace) });
    expect(reply.status).toBe(409);
    expect(reply.body.error).toMatchObject({ code: "conflict" });
    expect(reply.text).not.toContain(alpha.orgId);
    expect(reply.text).not.toContain("alpha");
    expect(await cp.snapshot({ exceptNonces: true })).toBe(before);
    expect(fake.inspect(alphaWorkspace)?.orgId).toBe(alpha.orgId);
  });

  it("an org's idempotency keys are its own", async () => {
    const key = "shared-key-name";
    const a = await cp.tenant(alpha, "POST", `/cp/workspaces/${alphaWorkspace}/stop`, {
      body: {},
      idempotencyKey: key,
    });
    expect(a.status).toBe(202);
    const b = await cp.tenant(beta, "POST", "/cp/workspaces/provision", {
      body: spec("ws_01jcpsecurity0000000000002"),
      idempotencyKey: key,
    });
    expect(b.status).toBe(202);
    expect(b.body.operation.id).not.toBe(a.body.operation.id);
    await cp.runner.drain();
  });
});

import { SIGNATURE_WINDOW_SECONDS } from "@molecule/contracts";
import { deriveTenantSigningKey, signRequest } from "@molecule/identity";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cpRequestNonces } from "./db/schema.ts";
import {
  createTestControlPlane,
  SHARED_SECRET,
  type TenantIdentity,
  type TestControlPlane,
  workspaceSpec,
} from "./testing.ts";

let cp: TestControlPlane;
let fake: FakeProvisioner;
let alpha: TenantIdentity;
let beta: TenantIdentity;
let alphaWorkspace: string;
let alphaOperation: string;

beforeAll(async () => {
  fake = createFakeProvisioner();
  cp = await createTestControlPlane({ provisioner: fake });
  alpha = await cp.createOrg("alpha-org");
  beta = await cp.createOrg("beta-org");
  await cp.runner.drain();
  alphaWorkspace = "ws_01jcpsecurity0000000000001";
  const accepted = await cp.tenant(alpha, "POST", "/cp/workspaces/provision", {
    body: workspaceSpec(alphaWorkspace),
  });
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
  workspaceSpec(`ws_01jcpsecurity${String(Math.floor(Math.random() * 1e12)).padStart(13, "0")}`);

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
      "missing signature (x-molecule-signature)",
    );
    // Signed for GET /cp/workspaces, sent as a provision.
    const nonce = "signed-for-another-route";
    const other = signRequest(deriveTenantSigningKey(SHARED_SECRET, alpha.orgId), {
      method: "GET",
      path: "/cp/workspaces",
      timestamp: String(Math.floor(cp.clock.now().getTime() / 1000)),
      nonce,
      body: "",
    });
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
    // On a whole second, so both edges are exactly one window away (the millisecond edges have their own test).
    cp.clock.advance(1000 - (cp.clock.now().getTime() % 1000));
    const now = cp.clock.now().getTime() / 1000;
    for (const timestamp of [now - SIGNATURE_WINDOW_SECONDS - 1, now + SIGNATURE_WINDOW_SECONDS + 1, 0]) {
      await refused(
        () => cp.tenant(alpha, "POST", "/cp/workspaces/provision", { body: provisionBody(), timestamp }),
        "stale timestamp",
      );
    }
    await refused(
      () => cp.tenant(alpha, "POST", "/cp/workspaces/provision", { body: provisionBody(), timestamp: -1 }),
      "malformed timestamp: unix seconds expected",
    );
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
    // Past the keeping time of every nonce so far, including those signed a whole window in the future.
    cp.clock.advance((2 * SIGNATURE_WINDOW_SECONDS + 2) * 1000);
    expect((await cp.tenant(alpha, "GET", "/cp/workspaces")).status).toBe(200);
    const pruned = await cp.db.db.select().from(cpRequestNonces);
    expect(pruned.map((row) => row.nonce)).not.toContain(nonce);
    expect(pruned).toHaveLength(1);
    await cp.runner.drain();
  });

  it("refuses a missing or malformed nonce", async () => {
    await refused(
      () => cp.tenant(alpha, "GET", "/cp/workspaces", { nonce: "" }),
      "missing nonce (x-molecule-nonce)",
    );
    await refused(
      () => cp.tenant(alpha, "GET", "/cp/workspaces", { nonce: "a b c d e f g h" }),
      "bad signature",
    );
  });
});

describe("missing signature headers", () => {
  it("names each missing header, in the order signature, timestamp, nonce", async () => {
    const cases = [
      [["timestamp", "nonce", "signature"], "missing signature (x-molecule-signature)"],
      [["signature"], "missing signature (x-molecule-signature)"],
      [["timestamp", "nonce"], "missing timestamp (x-molecule-timestamp)"],
      [["timestamp"], "missing timestamp (x-molecule-timestamp)"],
      [["nonce"], "missing nonce (x-molecule-nonce)"],
    ] as const;
    for (const [omitHeaders, message] of cases) {
      await refused(
        () => cp.tenant(alpha, "POST", "/cp/workspaces/provision", { body: provisionBody(), omitHeaders }),
        message,
      );
      await refused(() => cp.tenant(alpha, "GET", "/cp/workspaces", { omitHeaders }), message);
    }
  });
});

describe("the signature window and nonces, to the millisecond", () => {
  const WINDOW_MS = SIGNATURE_WINDOW_SECONDS * 1000;
  let org: TenantIdentity;

  /** Moves the control plane's clock to an exact unix millisecond. */
  const moveTo = (ms: number) => cp.clock.advance(ms - cp.clock.now().getTime());
  /** A fresh request at the clock's current second: accepted, and it prunes every nonce past keeping. */
  async function freshRequestPrunes() {
    expect((await cp.tenant(org, "GET", "/cp/workspaces")).status).toBe(200);
  }

  beforeAll(async () => {
    org = await cp.createOrg("window-org");
    await cp.runner.drain();
  });

  it("a request signed at second T is accepted from (T - window) to (T + window) ms inclusive, and only then", async () => {
    const start = Math.floor(cp.clock.now().getTime() / 1000) + 10;
    const signedAt = start + SIGNATURE_WINDOW_SECONDS; // lies in the future at first
    const T = signedAt * 1000;
    const expectations: [number, number][] = [
      [T - WINDOW_MS - 1, 401],
      [T - WINDOW_MS, 200],
      [T - 1, 200],
      [T + 500, 200],
      [T + WINDOW_MS - 1, 200],
      [T + WINDOW_MS, 200],
      [T + WINDOW_MS + 1, 401],
      [T + WINDOW_MS + 999, 401],
      [T + WINDOW_MS + 1000, 401],
    ];
    for (const [at, status] of expectations) {
      moveTo(at);
      const reply = await cp.tenant(org, "GET", "/cp/workspaces", { timestamp: signedAt });
      expect(reply.status, `signed at ${T}, sent at ${at}`).toBe(status);
      if (status === 401) expect(reply.body.error.message).toBe("stale timestamp");
    }
  });

  it("a replay is refused at every instant its original could still be accepted, a fresh request pruning in between", async () => {
    // The attack this guards: a tenant's `failed` boot event, replayed late in its window after the org became
    // ready, must not move it back to failed.
    const signedAt = Math.floor(cp.clock.now().getTime() / 1000) + 5;
    const T = signedAt * 1000;
    moveTo(T + 250);
    const nonce = "late-replay-0123456789";
    const body = { stage: "failed", detail: "image pull failed" };
    const original = await cp.tenant(org, "POST", "/cp/tenants/boot-event", {
      body,
      nonce,
      timestamp: signedAt,
    });
    expect(original.status).toBe(204);
    expect(
      (await cp.tenant(org, "POST", "/cp/tenants/boot-event", { body: { stage: "ready" } })).status,
    ).toBe(204);
    const statusOf = async () => (await cp.admin("GET", `/cp/orgs/${org.slug}`)).body.org.status;
    expect(await statusOf()).toBe("ready");

    const instants = [
      T + 1_000,
      T + WINDOW_MS / 2,
      T + WINDOW_MS - 1_000,
      T + WINDOW_MS - 999,
      T + WINDOW_MS - 500,
      T + WINDOW_MS - 1,
      T + WINDOW_MS,
      T + WINDOW_MS + 1,
      T + WINDOW_MS + 500,
      T + WINDOW_MS + 999,
      T + WINDOW_MS + 1_000,
      T + WINDOW_MS + 1_001,
      T + WINDOW_MS + 1_500,
    ];
    for (const at of instants) {
      moveTo(at);
      await freshRequestPrunes();
      const replay = await cp.tenant(org, "POST", "/cp/tenants/boot-event", {
        body,
        nonce,
        timestamp: signedAt,
      });
      expect(replay.status, `replay at window end ${at - T - WINDOW_MS} ms`).toBe(401);
      expect(replay.body.error.message).toBe(at <= T + WINDOW_MS ? "replayed request" : "stale timestamp");
    }
    expect(await statusOf()).toBe("ready");
    const events = (await cp.admin("GET", `/cp/orgs/${org.slug}`)).body.provision_status.events;
    expect(events.filter((event: { stage: string }) => event.stage === "failed")).toHaveLength(1);
  });

  it("keeps a nonce until one second past the last millisecond of its window, then prunes it", async () => {
    const signedAt = Math.floor(cp.clock.now().getTime() / 1000) + 5;
    const T = signedAt * 1000;
    moveTo(T);
    const nonce = "kept-then-pruned-0123";
    expect((await cp.tenant(org, "GET", "/cp/workspaces", { nonce, timestamp: signedAt })).status).toBe(200);
    const kept = async () =>
      (await cp.db.db.select().from(cpRequestNonces)).some(
        (row) => row.nonce === nonce && row.orgId === org.orgId,
      );

    moveTo(T + WINDOW_MS + 1_000);
    await freshRequestPrunes();
    expect(await kept()).toBe(true);
    moveTo(T + WINDOW_MS + 1_001);
    await freshRequestPrunes();
    expect(await kept()).toBe(false);
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
      ["POST", `/cp/workspaces/${alphaWorkspace}/start`, { spec: workspaceSpec(alphaWorkspace) }],
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
    const reply = await cp.tenant(beta, "POST", "/cp/workspaces/provision", {
      body: workspaceSpec(alphaWorkspace),
    });
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
      body: workspaceSpec("ws_01jcpsecurity0000000000002"),
      idempotencyKey: key,
    });
    expect(b.status).toBe(202);
    expect(b.body.operation.id).not.toBe(a.body.operation.id);
    await cp.runner.drain();
  });
});

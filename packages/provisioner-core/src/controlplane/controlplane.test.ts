import { createServer } from "node:net";
import { signatureMatches } from "@molecule/identity/signing";
import { afterEach, describe, expect, it } from "vitest";
import { HOSTILE_WORKSPACE_IDS } from "../../../../test-support/hostile-ids.ts";
import { ProvisionerError } from "../errors.ts";
import { ControlPlaneClient } from "./client.ts";
import { createControlPlaneProvisioner } from "./provisioner.ts";
import { ControlPlaneUnreachableError, fetchTenantConfig, postBootEvent } from "./tenant.ts";
import {
  type ControlPlaneHarness,
  emulatedAgentUrl,
  startControlPlaneHarness,
  TEST_SIGNING_KEY,
  TEST_TENANT_TOKEN,
} from "./testkit.ts";

const harnesses: ControlPlaneHarness[] = [];
afterEach(async () => {
  await Promise.all(harnesses.splice(0).map((h) => h.close()));
});

async function harness(options: Parameters<typeof startControlPlaneHarness>[0] = {}) {
  const h = await startControlPlaneHarness(options);
  harnesses.push(h);
  return h;
}

/** A loopback port nobody listens on. */
async function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function rejection(promise: Promise<unknown>): Promise<ProvisionerError> {
  const error = await promise.then(
    () => {
      throw new Error("expected a rejection");
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ProvisionerError);
  return error as ProvisionerError;
}

const posts = (h: ControlPlaneHarness, path: string) =>
  h.emulator.requests.filter((r) => r.method === "POST" && r.path === path);

describe("controlplane backend: signing and retries", () => {
  it("signs every send afresh, retries 5xx with the same Idempotency-Key, and makes one operation", async () => {
    const h = await harness();
    const spec = h.makeSpec();
    h.emulator.inject(
      { method: "POST", path: "/cp/workspaces/provision" },
      { kind: "status", status: 500 },
      2,
    );
    const handle = await h.provisioner.provision(spec, null, { idempotencyKey: "op_1:1:provision" });
    expect(handle).toEqual({
      backend: "controlplane",
      workspaceId: spec.workspaceId,
      agentUrl: emulatedAgentUrl(spec.workspaceId, 1),
    });

    const sends = posts(h, "/cp/workspaces/provision");
    expect(sends.map((s) => s.outcome)).toEqual([500, 500, 202]);
    expect(sends.map((s) => s.idempotencyKey)).toEqual(Array(3).fill("op_1:1:provision"));
    expect(new Set(sends.map((s) => s.nonce)).size).toBe(3);
    expect(new Set(sends.map((s) => s.signature)).size).toBe(3);
    // every send's signature is valid for its own headers (the emulator checked the one it handled; check all)
    const body = JSON.stringify({
      workspace_id: spec.workspaceId,
      runtime: spec.runtime,
      tier: spec.tier,
      env: spec.env,
      secret_keys: spec.secretKeys,
      metadata: {},
    });
    for (const send of sends) {
      expect(
        signatureMatches(TEST_SIGNING_KEY, send.signature ?? "", {
          method: "POST",
          path: "/cp/workspaces/provision",
          timestamp: send.timestamp ?? "",
          nonce: send.nonce ?? "",
          body,
        }),
      ).toBe(true);
    }
    expect(h.emulator.requests.every((r) => r.outcome === 500 || r.authorized)).toBe(true);
    expect(h.emulator.operationCount()).toBe(1);
    expect(h.emulator.workspace(spec.workspaceId)?.state).toBe("running");
  });

  it("makes one key per call when the caller gives none, and reuses it after a lost answer", async () => {
    const h = await harness();
    const spec = h.makeSpec();
    // the control plane does the work but the answer is lost: the retry must land on the same operation
    h.emulator.inject(
      { method: "POST", path: "/cp/workspaces/provision" },
      { kind: "drop", afterApply: true },
    );
    await h.provisioner.provision(spec, null);
    const sends = posts(h, "/cp/workspaces/provision");
    expect(sends.map((s) => s.outcome)).toEqual(["dropped", 202]);
    expect(sends[0]?.idempotencyKey).toMatch(/^tenant-/);
    expect(sends[1]?.idempotencyKey).toBe(sends[0]?.idempotencyKey);
    expect(sends[1]?.nonce).not.toBe(sends[0]?.nonce);
    expect(h.emulator.operationCount()).toBe(1);

    await h.provisioner.stop({ workspaceId: spec.workspaceId, orgId: spec.orgId, handle: null });
    const stopKey = posts(h, `/cp/workspaces/${spec.workspaceId}/stop`)[0]?.idempotencyKey;
    expect(stopKey).toMatch(/^tenant-/);
    expect(stopKey).not.toBe(sends[0]?.idempotencyKey);
  });

  it("honours Retry-After on 429", async () => {
    const h = await harness();
    h.emulator.inject(
      { method: "GET", path: "/cp/workspaces" },
      { kind: "status", status: 429, retryAfter: "2" },
    );
    expect(await h.provisioner.listManaged()).toEqual([]);
    expect(h.sleeps).toContain(2_000);
    expect(h.emulator.requests.map((r) => r.outcome)).toEqual([429, 200]);
  });

  it("retries a dropped connection and a send that timed out, both on the same operation", async () => {
    const h = await harness({ provisioner: { requestTimeoutMs: 200 } });
    const spec = h.makeSpec();
    h.emulator.inject({ method: "POST", path: "/cp/workspaces/provision" }, { kind: "drop" });
    h.emulator.inject({ method: "POST", path: "/cp/workspaces/provision" }, { kind: "delay", ms: 1_000 });
    await h.provisioner.provision(spec, null, { idempotencyKey: "op_2:1:provision" });
    const sends = posts(h, "/cp/workspaces/provision");
    expect(sends.length).toBeGreaterThanOrEqual(3);
    expect(sends[0]?.outcome).toBe("dropped");
    expect(new Set(sends.map((s) => s.idempotencyKey))).toEqual(new Set(["op_2:1:provision"]));
    expect(h.emulator.operationCount()).toBe(1);
  });

  it("refuses a workspace id that is not a minted id on every call, without a request", async () => {
    const h = await harness();
    const p = h.provisioner;
    for (const bad of HOSTILE_WORKSPACE_IDS) {
      const spec = h.makeSpec({ workspaceId: bad });
      const ref = { workspaceId: bad, orgId: spec.orgId, handle: null };
      for (const call of [
        () => p.provision(spec, null),
        () => p.start(spec, null),
        () => p.stop(ref),
        () => p.suspend(ref),
        () => p.destroy(ref),
        () => p.status(ref),
      ]) {
        expect(await rejection(call()), JSON.stringify(bad)).toMatchObject({
          code: "invalid_spec",
          retryable: false,
        });
      }
    }
    expect(h.emulator.requests).toEqual([]);
  });

  it("never retries other 4xx answers", async () => {
    const h = await harness();
    const spec = h.makeSpec();
    h.emulator.inject({ method: "POST", path: "/cp/workspaces/provision" }, { kind: "status", status: 400 });
    const error = await rejection(h.provisioner.provision(spec, null));
    expect(error).toMatchObject({ code: "invalid_spec", retryable: false });
    expect(posts(h, "/cp/workspaces/provision")).toHaveLength(1);
    expect(h.emulator.workspace(spec.workspaceId)).toBeUndefined();
  });

  it("answers a reused Idempotency-Key with a non-retryable conflict", async () => {
    const h = await harness();
    const a = h.makeSpec();
    const b = h.makeSpec();
    await h.provisioner.provision(a, null, { idempotencyKey: "same-key" });
    const error = await rejection(h.provisioner.provision(b, null, { idempotencyKey: "same-key" }));
    expect(error).toMatchObject({ code: "conflict", retryable: false });
    expect(error.details.cpCode).toBe("idempotency_key_reused");
    expect(posts(h, "/cp/workspaces/provision")).toHaveLength(2);
  });

  it("refuses with a wrong signing key in one send, naming what to check and never the secrets", async () => {
    const h = await harness({ provisioner: { signingKey: "not-the-org-key" } });
    const error = await rejection(h.provisioner.provision(h.makeSpec(), null));
    expect(error.retryable).toBe(false);
    expect(error.message).toMatch(/HTTP 401/);
    expect(error.message).toMatch(/PROVISION_SHARED_SECRET/);
    expect(error.message).not.toContain(TEST_TENANT_TOKEN);
    expect(error.message).not.toContain("not-the-org-key");
    expect(h.emulator.requests).toHaveLength(1);
    expect(h.emulator.requests[0]?.authorized).toBe(false);
  });

  it("keeps the credential, the key and env values out of log lines and errors", async () => {
    const lines: string[] = [];
    const logger = {
      warn: (fields: Record<string, unknown>, message: string) =>
        lines.push(JSON.stringify({ fields, message })),
    };
    const h = await harness({ provisioner: { logger } });
    const spec = h.makeSpec({
      env: { WORKSPACE_BOOT_TOKEN: "very-secret-boot-value", OPENAI_API_KEY: "sk-secret" },
      secretKeys: ["WORKSPACE_BOOT_TOKEN", "OPENAI_API_KEY"],
    });
    h.emulator.inject(
      { method: "POST", path: "/cp/workspaces/provision" },
      { kind: "status", status: 503 },
      2,
    );
    h.emulator.failNextOperation("provision", { code: "capacity", message: "no room", retryable: true });
    const error = await rejection(h.provisioner.provision(spec, null));
    expect(lines.length).toBe(2);
    for (const text of [...lines, error.message, JSON.stringify(error.details)]) {
      for (const secret of [TEST_TENANT_TOKEN, TEST_SIGNING_KEY, "very-secret-boot-value", "sk-secret"]) {
        expect(text).not.toContain(secret);
      }
    }
  });
});

describe("controlplane backend: operations", () => {
  it("reports the control plane's steps once each, in order", async () => {
    const h = await harness();
    const steps: string[] = [];
    await h.provisioner.provision(h.makeSpec(), null, { step: (name) => steps.push(name) });
    expect(steps).toEqual(["volume_ready", "instance_created", "instance_started"]);
  });

  it("surfaces a failed operation as a ProvisionerError with the control plane's code, message and retryable", async () => {
    const h = await harness();
    h.emulator.failNextOperation("provision", {
      code: "capacity",
      message: "no capacity in ord",
      retryable: true,
    });
    const steps: string[] = [];
    const transient = await rejection(
      h.provisioner.provision(h.makeSpec(), null, { step: (s) => steps.push(s) }),
    );
    expect(transient).toMatchObject({ code: "capacity", retryable: true });
    expect(transient.message).toContain("no capacity in ord");
    expect(steps).toEqual(["accepted"]);

    h.emulator.failNextOperation("provision", {
      code: "image_pull_denied",
      message: "the image registry refused",
      retryable: false,
    });
    const final = await rejection(h.provisioner.provision(h.makeSpec(), null));
    expect(final).toMatchObject({ code: "backend_error", retryable: false });
    expect(final.details.cpCode).toBe("image_pull_denied");
    expect(final.message).toContain("the image registry refused");
  });

  it("start sends the spec and the recreate flag", async () => {
    const h = await harness();
    const spec = h.makeSpec();
    const handle = await h.provisioner.provision(spec, null);
    await h.provisioner.stop({ workspaceId: spec.workspaceId, orgId: spec.orgId, handle });
    await h.provisioner.start({ ...spec, env: { ...spec.env, NEW_SECRET: "x" } }, handle, { recreate: true });
    const workspace = h.emulator.workspace(spec.workspaceId);
    expect(workspace).toMatchObject({ state: "running", generation: 2 });
    expect(workspace?.spec.env.NEW_SECRET).toBe("x");
  });

  it("keeps the agent's address the control plane's backend assigned, from each provision and start", async () => {
    const h = await harness();
    const spec = h.makeSpec();
    const handle = await h.provisioner.provision(spec, null);
    expect(handle.agentUrl).toBe(emulatedAgentUrl(spec.workspaceId, 1));
    const ref = { workspaceId: spec.workspaceId, orgId: spec.orgId, handle };
    await h.provisioner.stop(ref);
    expect((await h.provisioner.start(spec, handle)).agentUrl).toBe(handle.agentUrl);
    // A rebuilt process may have a new address; the handle takes the one the operation reported.
    const rebuilt = await h.provisioner.start(spec, handle, { recreate: true });
    expect(rebuilt.agentUrl).toBe(emulatedAgentUrl(spec.workspaceId, 2));
  });

  it("suspend says when the control plane stopped instead", async () => {
    const h = await harness({ emulator: { suspend: false } });
    const spec = h.makeSpec();
    const handle = await h.provisioner.provision(spec, null);
    const result = await h.provisioner.suspend({ workspaceId: spec.workspaceId, orgId: spec.orgId, handle });
    expect(result.suspended).toBe(false);
    expect(result.reason).toMatch(/cannot suspend/);
    expect(h.provisioner.capabilities()).toEqual({ suspend: false });
  });

  it("stops waiting when the signal aborts, while the operation is pending and while a send is slow", async () => {
    const h = await harness({ emulator: { operationPhaseMs: 60_000 } });
    const pending = new AbortController();
    const provision = h.provisioner.provision(h.makeSpec(), null, { signal: pending.signal });
    while (h.emulator.operationCount() === 0) await new Promise((r) => setTimeout(r, 5));
    pending.abort(new Error("operation lease lost"));
    const error = await rejection(provision);
    expect(error).toMatchObject({ code: "timeout", retryable: true });
    expect(error.details.reason).toBe("operation lease lost");

    const slow = new AbortController();
    const slowId = "ws_01jcpslow00000000000000000";
    const path = `/cp/workspaces/${slowId}/stop`;
    h.emulator.inject({ method: "POST", path }, { kind: "delay", ms: 60_000 });
    const stop = h.provisioner.stop(
      { workspaceId: slowId, orgId: "org_x", handle: null },
      { signal: slow.signal },
    );
    while (posts(h, path).length === 0) await new Promise((r) => setTimeout(r, 5));
    slow.abort(new Error("shutting down"));
    expect(await rejection(stop)).toMatchObject({ code: "timeout", retryable: true });
    expect(posts(h, path)).toHaveLength(1);
  });

  it("treats 404 on stop and destroy as nothing to do", async () => {
    const h = await harness();
    const ref = { workspaceId: "ws_01jcpunknown00000000000000", orgId: "org_x", handle: null };
    await h.provisioner.stop(ref);
    h.emulator.inject({ method: "DELETE" }, { kind: "status", status: 404, code: "not_found" });
    await h.provisioner.destroy(ref);
    expect(await h.provisioner.suspend(ref)).toMatchObject({ suspended: false });
  });
});

describe("controlplane backend: polling an operation", () => {
  /**
   * A clock that moves only when the backend sleeps, and a sleep that records each wait and returns at once. After
   * `releaseAfter` waits the held operations are let go, and that sleep returns only when they have ended, so the
   * next poll is the one that sees the end.
   */
  function steppedTime(h: ControlPlaneHarness, release: () => void, releaseAfter: number) {
    let now = Date.now();
    const waits: number[] = [];
    return {
      waits,
      clock: { now: () => now },
      async sleep(ms: number, signal?: AbortSignal) {
        if (signal?.aborted) throw new Error("aborted");
        waits.push(ms);
        now += ms;
        if (waits.length === releaseAfter) {
          release();
          await ended(h);
        }
      },
    };
  }

  async function ended(h: ControlPlaneHarness): Promise<void> {
    const open = () =>
      Array.from({ length: h.emulator.operationCount() }, (_, i) =>
        h.emulator.operation(`cpop_${String(i + 1).padStart(6, "0")}`),
      ).some((operation) => operation?.status === "pending" || operation?.status === "running");
    while (open()) await new Promise((resolve) => setTimeout(resolve, 1));
  }

  const operationPolls = (h: ControlPlaneHarness) =>
    h.emulator.requests.filter((r) => r.method === "GET" && r.path.startsWith("/cp/operations/"));

  it("polls first after 15 ms, then 1.5 times longer each time up to 500 ms, reporting each step once", async () => {
    const h = await harness();
    const spec = h.makeSpec();
    await h.provisioner.provision(spec, null);
    const release = h.emulator.holdOperations();
    const time = steppedTime(h, release, 13);
    const provisioner = createControlPlaneProvisioner({
      baseUrl: h.emulator.url,
      tenantToken: TEST_TENANT_TOKEN,
      signingKey: TEST_SIGNING_KEY,
      capabilities: { suspend: true },
      clock: time.clock,
      sleep: time.sleep,
    });
    const before = operationPolls(h).length;
    const steps: string[] = [];
    await provisioner.stop(
      { workspaceId: spec.workspaceId, orgId: spec.orgId, handle: null },
      { step: (name) => steps.push(name) },
    );
    expect(time.waits).toEqual([15, 23, 34, 51, 76, 114, 171, 256, 384, 500, 500, 500, 500]);
    expect(operationPolls(h).length - before).toBe(13);
    expect(steps).toEqual(["instance_stopped"]);
    expect(h.emulator.workspace(spec.workspaceId)?.state).toBe("stopped");
  });

  it("takes its first wait and its cap from pollInitialMs and pollMaxMs", async () => {
    const h = await harness();
    const release = h.emulator.holdOperations();
    const time = steppedTime(h, release, 6);
    const provisioner = createControlPlaneProvisioner({
      baseUrl: h.emulator.url,
      tenantToken: TEST_TENANT_TOKEN,
      signingKey: TEST_SIGNING_KEY,
      capabilities: { suspend: true },
      pollInitialMs: 100,
      pollMaxMs: 300,
      clock: time.clock,
      sleep: time.sleep,
    });
    const steps: string[] = [];
    await provisioner.provision(h.makeSpec(), null, { step: (name) => steps.push(name) });
    expect(time.waits).toEqual([100, 150, 225, 300, 300, 300]);
    expect(steps).toEqual(["volume_ready", "instance_created", "instance_started"]);
  });

  it("never waits past the operation deadline, and gives up there with a retryable timeout", async () => {
    const h = await harness();
    const release = h.emulator.holdOperations();
    const time = steppedTime(h, release, Number.POSITIVE_INFINITY);
    const provisioner = createControlPlaneProvisioner({
      baseUrl: h.emulator.url,
      tenantToken: TEST_TENANT_TOKEN,
      signingKey: TEST_SIGNING_KEY,
      capabilities: { suspend: true },
      operationTimeoutMs: 1_000,
      clock: time.clock,
      sleep: time.sleep,
    });
    const error = await rejection(provisioner.provision(h.makeSpec(), null));
    expect(error).toMatchObject({ code: "timeout", retryable: true });
    expect(error.message).toMatch(/did not finish within 1 s \(last status pending\)/);
    // 15 … 256 add up to 740 ms; the next wait is cut to the 260 ms left
    expect(time.waits).toEqual([15, 23, 34, 51, 76, 114, 171, 256, 260]);
    expect(operationPolls(h)).toHaveLength(9);
    release();
  });
});

describe("controlplane backend: status and listManaged", () => {
  it("maps 404 to missing and transient failures to unknown, never missing", async () => {
    const h = await harness();
    const spec = h.makeSpec();
    const ref = { workspaceId: spec.workspaceId, orgId: spec.orgId, handle: null };
    expect(await h.provisioner.status(ref)).toMatchObject({ state: "missing" });
    await h.provisioner.provision(spec, null);
    expect(await h.provisioner.status(ref)).toEqual({ state: "running" });

    h.emulator.inject(
      { method: "GET", path: `/cp/workspaces/${spec.workspaceId}/status` },
      { kind: "status", status: 502 },
      2,
    );
    const down = await h.provisioner.status(ref);
    expect(down.state).toBe("unknown");
    expect(down.detail).toMatch(/HTTP 502/);

    h.emulator.inject(
      { method: "GET", path: `/cp/workspaces/${spec.workspaceId}/status` },
      { kind: "drop" },
      2,
    );
    expect((await h.provisioner.status(ref)).state).toBe("unknown");

    const nowhere = createControlPlaneProvisioner({
      baseUrl: `http://127.0.0.1:${await closedPort()}`,
      tenantToken: TEST_TENANT_TOKEN,
      signingKey: TEST_SIGNING_KEY,
      capabilities: { suspend: false },
      retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 2 },
    });
    const refused = await nowhere.status(ref);
    expect(refused.state).toBe("unknown");
    expect(refused.detail).toMatch(/ECONNREFUSED/);
    await expect(nowhere.listManaged()).rejects.toMatchObject({
      code: "backend_unavailable",
      retryable: true,
    });
  });

  it("lists the org's workspaces as managed resources", async () => {
    const h = await harness();
    const a = h.makeSpec();
    const b = h.makeSpec();
    await h.provisioner.provision(a, null);
    await h.provisioner.provision(b, null);
    await h.provisioner.stop({ workspaceId: b.workspaceId, orgId: b.orgId, handle: null });
    const managed = await h.provisioner.listManaged();
    expect(managed.sort((x, y) => x.id.localeCompare(y.id))).toEqual([
      {
        kind: "workspace",
        id: a.workspaceId,
        workspaceId: a.workspaceId,
        orgId: h.emulator.orgId,
        state: "running",
      },
      {
        kind: "workspace",
        id: b.workspaceId,
        workspaceId: b.workspaceId,
        orgId: h.emulator.orgId,
        state: "stopped",
      },
    ]);
  });
});

describe("tenant start-up calls", () => {
  function client(url: string, key = TEST_SIGNING_KEY) {
    return new ControlPlaneClient({ baseUrl: url, tenantToken: TEST_TENANT_TOKEN, signingKey: key });
  }
  const quick = {
    baseDelayMs: 1,
    maxDelayMs: 2,
    sleep: (ms: number) => new Promise<void>((r) => setTimeout(r, Math.min(ms, 2))),
  };

  it("fetches the tenant config, waiting through 503s", async () => {
    const h = await harness();
    h.emulator.inject({ path: "/cp/tenants/config" }, { kind: "status", status: 503 }, 3);
    const config = await fetchTenantConfig(client(h.emulator.url), quick);
    expect(config.org_id).toBe(h.emulator.orgId);
    expect(h.emulator.requests.map((r) => r.outcome)).toEqual([503, 503, 503, 200]);
    expect(h.emulator.requests[3]?.authorized).toBe(true);
  });

  it("gives up on an unreachable control plane after its wait, and at once on a refusal", async () => {
    const gone = await rejectionOf(
      fetchTenantConfig(client(`http://127.0.0.1:${await closedPort()}`), { ...quick, waitMs: 50 }),
    );
    expect(gone.reachable).toBe(false);
    expect(gone.message).toMatch(/did not answer GET \/cp\/tenants\/config within/);

    const h = await harness();
    const refused = await rejectionOf(fetchTenantConfig(client(h.emulator.url, "wrong-key"), quick));
    expect(refused.reachable).toBe(true);
    expect(refused.message).toMatch(/refused/);
    expect(h.emulator.requests).toHaveLength(1);
  });

  it("posts boot events, and a failure to post is reported, never thrown", async () => {
    const h = await harness();
    expect(await postBootEvent(client(h.emulator.url), { stage: "migrated" })).toBe(true);
    expect(await postBootEvent(client(h.emulator.url), { stage: "failed", detail: "x".repeat(5_000) })).toBe(
      true,
    );
    expect(h.emulator.bootEvents.map((e) => e.stage)).toEqual(["migrated", "failed"]);
    expect(h.emulator.bootEvents[1]?.detail).toHaveLength(1_000);
    const warnings: string[] = [];
    const logger = { warn: (_: unknown, message: string) => warnings.push(message) };
    expect(await postBootEvent(client(h.emulator.url, "wrong-key"), { stage: "ready" }, logger)).toBe(false);
    expect(warnings).toEqual(["could not post boot event to the control plane"]);
  });
});

async function rejectionOf(promise: Promise<unknown>): Promise<ControlPlaneUnreachableError> {
  const error = await promise.then(
    () => {
      throw new Error("expected a rejection");
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ControlPlaneUnreachableError);
  return error as ControlPlaneUnreachableError;
}

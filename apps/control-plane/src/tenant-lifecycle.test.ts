/**
 * The tenant lifecycle admin API on the stateful fake tenant backend, over real PostgreSQL: stop, start and redeploy
 * are durable org operations shown on the org's view; start and redeploy succeed only once the tenant (played here
 * through the signed tenant API) reports `ready`, with the new image for a redeploy; a failing recreate or a tenant
 * that never comes back fails the operation with what it said, secrets taken out. Canary marking picks the canary
 * image. Auth, unknown slugs and bad bodies are refused with the error envelope and change nothing.
 */
import { ProvisionerError } from "@molecule/provisioner-core";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../../../test-support/wait.ts";
import { createExternalTenantBackend } from "./backends.ts";
import { cpOperations } from "./db/schema.ts";
import { chooseAmi, TENANT_RUNTIME } from "./services/ami.ts";
import { FAKE_CANARY_IMAGE, FAKE_TENANT_IMAGE } from "./tenants/fake.ts";
import {
  ADMIN_TOKEN,
  createTestControlPlane,
  type TenantIdentity,
  type TestControlPlane,
} from "./testing.ts";

let cp: TestControlPlane;

beforeAll(async () => {
  cp = await createTestControlPlane({ settings: { tenantReadyDeadlineMs: 2_000 } });
});
afterAll(() => cp.close());

/** The tenant's side: a boot event through the signed tenant API. */
async function report(org: TenantIdentity, stage: "ready" | "failed", extra: Record<string, string> = {}) {
  const posted = await cp.tenant(org, "POST", "/cp/tenants/boot-event", { body: { stage, ...extra } });
  expect(posted.status, posted.text).toBe(204);
}

/** An org whose tenant was provisioned and reported ready with the default image. */
async function readyOrg(slug: string): Promise<TenantIdentity> {
  const org = await cp.createOrg(slug);
  await cp.runner.drain();
  await report(org, "ready", { image: FAKE_TENANT_IMAGE });
  const { body } = await cp.admin("GET", `/cp/orgs/${slug}`);
  expect(body.org).toMatchObject({ status: "ready", tenant_image: FAKE_TENANT_IMAGE });
  return org;
}

const orgView = async (slug: string) => (await cp.admin("GET", `/cp/orgs/${slug}`)).body;

describe("stop and start", () => {
  it("stop stops the tenant and the org shows stopped; start brings it back once it reports ready", async () => {
    const org = await readyOrg("stopper");
    const stopping = await cp.admin("POST", "/cp/admin/tenants/stopper/stop");
    expect(stopping.status, stopping.text).toBe(202);
    expect(stopping.body.operation).toMatchObject({ kind: "stop_tenant", status: "pending" });
    // Asked again while pending: the same operation.
    const again = await cp.admin("POST", "/cp/admin/tenants/stopper/stop");
    expect(again.body.operation.id).toBe(stopping.body.operation.id);
    await cp.runner.drain();
    expect(cp.tenants.inspect(org.orgId)?.running).toBe(false);
    let shown = await orgView("stopper");
    expect(shown.org.status).toBe("stopped");
    expect(shown.operation).toMatchObject({ id: stopping.body.operation.id, status: "succeeded" });
    // A stopped tenant is not redeployed.
    const refused = await cp.admin("POST", "/cp/admin/tenants/stopper/redeploy", {});
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({ code: "conflict" });

    const starting = await cp.admin("POST", "/cp/admin/tenants/stopper/start");
    expect(starting.status).toBe(202);
    const draining = cp.runner.drain();
    await waitFor("the tenant to be started", async () =>
      cp.tenants.inspect(org.orgId)?.running ? true : undefined,
    );
    shown = await orgView("stopper");
    expect(shown.org.status).toBe("provisioning");
    expect(shown.operation).toMatchObject({ kind: "start_tenant", status: "running" });
    await report(org, "ready", { image: FAKE_TENANT_IMAGE });
    await draining;
    shown = await orgView("stopper");
    expect(shown.org.status).toBe("ready");
    expect(shown.operation).toMatchObject({ kind: "start_tenant", status: "succeeded" });
    expect(shown.operation.steps.map((s: { name: string }) => s.name)).toEqual([
      "tenant_started",
      "tenant_ready",
    ]);

    // Starting a tenant that runs changes nothing and waits for nothing.
    await cp.admin("POST", "/cp/admin/tenants/stopper/start");
    await cp.runner.drain();
    shown = await orgView("stopper");
    expect(shown.operation.steps.map((s: { name: string }) => s.name)).toEqual(["already_running"]);
    expect(shown.org.status).toBe("ready");
  });

  it("a start whose tenant never reports ready fails at the deadline and leaves the org failed", async () => {
    await readyOrg("sleeper");
    await cp.admin("POST", "/cp/admin/tenants/sleeper/stop");
    await cp.runner.drain();
    await cp.admin("POST", "/cp/admin/tenants/sleeper/start");
    await cp.runner.drain();
    const shown = await orgView("sleeper");
    expect(shown.operation).toMatchObject({ kind: "start_tenant", status: "failed", attempts: 1 });
    expect(shown.operation.error).toMatchObject({ code: "timeout", retryable: false });
    expect(shown.operation.error.message).toContain("did not report ready within 2 s");
    expect(shown.org.status).toBe("failed");
  });
});

describe("redeploy", () => {
  it("runs the given image and succeeds only when the tenant reports ready with it", async () => {
    const org = await readyOrg("mover");
    const image = "ghcr.io/acme/tenant-platform:2.0.0";
    const asked = await cp.admin("POST", "/cp/admin/tenants/mover/redeploy", { image });
    expect(asked.status, asked.text).toBe(202);
    expect(asked.body.operation).toMatchObject({ kind: "redeploy_tenant", status: "pending" });
    const draining = cp.runner.drain();
    await waitFor("the tenant to be recreated", async () =>
      cp.tenants.inspect(org.orgId)?.image === image ? true : undefined,
    );
    // A late `ready` of the old image does not count; the new one does.
    await report(org, "ready", { image: FAKE_TENANT_IMAGE });
    expect((await orgView("mover")).operation.status).toBe("running");
    await report(org, "ready", { image });
    await draining;
    const shown = await orgView("mover");
    expect(shown.operation).toMatchObject({ kind: "redeploy_tenant", status: "succeeded", attempts: 1 });
    expect(shown.operation.steps.map((s: { name: string }) => s.name)).toEqual([
      "image_chosen",
      "tenant_recreated",
      "recreated",
      "tenant_ready",
    ]);
    expect(shown.org).toMatchObject({ status: "ready", tenant_image: image });
    expect(cp.tenants.inspect(org.orgId)?.redeploys).toBe(1);
  });

  it("without an image runs TENANT_IMAGE, or the canary image once the org is marked canary", async () => {
    const org = await readyOrg("canary-to-be");
    const marked = await cp.admin("PATCH", "/cp/admin/orgs/canary-to-be", { is_canary: true });
    expect(marked.status, marked.text).toBe(200);
    expect(marked.body.org.is_canary).toBe(true);
    await cp.admin("POST", "/cp/admin/tenants/canary-to-be/redeploy");
    const draining = cp.runner.drain();
    await waitFor("the canary image", async () =>
      cp.tenants.inspect(org.orgId)?.image === FAKE_CANARY_IMAGE ? true : undefined,
    );
    await report(org, "ready", { image: FAKE_CANARY_IMAGE });
    await draining;
    expect((await orgView("canary-to-be")).org.tenant_image).toBe(FAKE_CANARY_IMAGE);

    await cp.admin("PATCH", "/cp/admin/orgs/canary-to-be", { is_canary: false });
    const back = await cp.admin("POST", "/cp/admin/tenants/canary-to-be/redeploy", {});
    const [row] = await cp.db.db
      .select()
      .from(cpOperations)
      .where(eq(cpOperations.id, back.body.operation.id));
    expect(row?.input).toEqual({ image: FAKE_TENANT_IMAGE });
    const again = cp.runner.drain();
    await waitFor("the default image", async () =>
      cp.tenants.inspect(org.orgId)?.image === FAKE_TENANT_IMAGE ? true : undefined,
    );
    await report(org, "ready", { image: FAKE_TENANT_IMAGE });
    await again;
  });

  it("a recreate that fails fails the operation for good with its output, secrets taken out", async () => {
    const org = await readyOrg("broken");
    const env = cp.tenants.inspect(org.orgId)?.env ?? {};
    const token = env.CP_TENANT_TOKEN ?? "";
    expect(token).toMatch(/^mct_/);
    cp.tenants.failNext(
      "redeploy",
      new ProvisionerError(
        "backend_error",
        `command ended Failed (exit 1): pull access denied for ghcr.io/acme/nope; env CP_TENANT_TOKEN=${token}`,
        false,
      ),
    );
    await cp.admin("POST", "/cp/admin/tenants/broken/redeploy", { image: "ghcr.io/acme/nope:1" });
    await cp.runner.drain();
    const shown = await orgView("broken");
    expect(shown.operation).toMatchObject({ status: "failed", attempts: 1 });
    expect(shown.operation.error.message).toContain("pull access denied for ghcr.io/acme/nope");
    expect(shown.operation.error.message).not.toContain(token);
    expect(JSON.stringify(shown)).not.toContain(token);
    // The tenant still runs what it ran; the org keeps its status.
    expect(shown.org).toMatchObject({ status: "ready", tenant_image: FAKE_TENANT_IMAGE });
  });

  it("a tenant that reports a failed boot, or never reports ready, fails the redeploy with the recreate's output", async () => {
    const org = await readyOrg("flaky");
    await cp.admin("POST", "/cp/admin/tenants/flaky/redeploy", { image: "ghcr.io/acme/tenant:bad" });
    const draining = cp.runner.drain();
    await waitFor("the recreate", async () =>
      cp.tenants.inspect(org.orgId)?.image === "ghcr.io/acme/tenant:bad" ? true : undefined,
    );
    await report(org, "failed", { detail: "migration 0042 failed", image: "ghcr.io/acme/tenant:bad" });
    await draining;
    let shown = await orgView("flaky");
    expect(shown.operation).toMatchObject({ status: "failed", attempts: 1 });
    expect(shown.operation.error.message).toContain(
      "the tenant reported a failed boot: migration 0042 failed",
    );
    expect(shown.operation.error.message).toContain("runs ghcr.io/acme/tenant:bad");

    await report(org, "ready", { image: FAKE_TENANT_IMAGE });
    await cp.admin("POST", "/cp/admin/tenants/flaky/redeploy", { image: "ghcr.io/acme/tenant:silent" });
    await cp.runner.drain();
    shown = await orgView("flaky");
    expect(shown.operation).toMatchObject({ status: "failed", attempts: 1 });
    expect(shown.operation.error).toMatchObject({ code: "timeout", retryable: false });
    expect(shown.operation.error.message).toContain(
      "did not report ready with ghcr.io/acme/tenant:silent within 2 s",
    );
  });
});

describe("refusals", () => {
  it("admin auth is required on every route: 401 with the envelope, nothing queued", async () => {
    await readyOrg("guarded");
    const before = await cp.snapshot();
    const routes: [string, string][] = [
      ["POST", "/cp/admin/tenants/guarded/stop"],
      ["POST", "/cp/admin/tenants/guarded/start"],
      ["POST", "/cp/admin/tenants/guarded/redeploy"],
      ["PATCH", "/cp/admin/orgs/guarded"],
      ["GET", "/cp/admin/ami-pins"],
      ["PUT", "/cp/admin/ami-pins/tenant-platform/us-east-1"],
      ["DELETE", "/cp/admin/ami-pins/tenant-platform/us-east-1"],
    ];
    for (const [method, path] of routes) {
      for (const authorization of [
        undefined,
        "Bearer not-the-admin-token-0123456789",
        "Basic Zm9vOmJhcg==",
      ]) {
        const response = await cp.app.request(path, {
          method,
          headers: authorization ? { authorization } : {},
        });
        expect(response.status, `${method} ${path}`).toBe(401);
        const body = (await response.json()) as { error: Record<string, string> };
        expect(body.error).toMatchObject({ code: "unauthorized" });
        expect(body.error.requestId).toBeTruthy();
      }
    }
    expect(await cp.snapshot()).toBe(before);
  });

  it("unknown slugs are 404, bad slugs, images and bodies 400, all with the envelope, nothing changed", async () => {
    await readyOrg("picky");
    const before = await cp.snapshot();
    const cases: [string, string, unknown, number][] = [
      ["POST", "/cp/admin/tenants/nobody-here/stop", undefined, 404],
      ["POST", "/cp/admin/tenants/nobody-here/start", undefined, 404],
      ["POST", "/cp/admin/tenants/nobody-here/redeploy", {}, 404],
      ["PATCH", "/cp/admin/orgs/nobody-here", { is_canary: true }, 404],
      ["POST", "/cp/admin/tenants/Not_A_Slug/stop", undefined, 400],
      ["POST", "/cp/admin/tenants/picky/redeploy", { image: "acme/tenant; rm -rf /" }, 400],
      ["POST", "/cp/admin/tenants/picky/redeploy", { image: "Acme/Tenant:1" }, 400],
      ["POST", "/cp/admin/tenants/picky/redeploy", { image: "" }, 400],
      ["POST", "/cp/admin/tenants/picky/redeploy", { image: "a".repeat(300) }, 400],
      ["POST", "/cp/admin/tenants/picky/redeploy", { image: "acme/x:1", reboot: true }, 400],
      ["PATCH", "/cp/admin/orgs/picky", { is_canary: "yes" }, 400],
      ["PATCH", "/cp/admin/orgs/picky", {}, 400],
      ["PUT", "/cp/admin/ami-pins/tenant-platform/us-east-1", { ami_id: "ami-XYZ" }, 400],
      ["PUT", "/cp/admin/ami-pins/tenant-platform/mars-1", { ami_id: "ami-0123abcd" }, 400],
      ["PUT", "/cp/admin/ami-pins/Tenant Platform/us-east-1", { ami_id: "ami-0123abcd" }, 400],
      ["DELETE", "/cp/admin/ami-pins/tenant-platform/us-east-1", undefined, 404],
    ];
    for (const [method, path, body, status] of cases) {
      const reply = await cp.admin(method, path, body);
      expect(reply.status, `${method} ${path} ${JSON.stringify(body)}: ${reply.text}`).toBe(status);
      expect(reply.body.error.code).toBe(status === 404 ? "not_found" : "bad_request");
      expect(reply.body.error.requestId).toBeTruthy();
      expect(reply.text).not.toContain("at ");
    }
    const malformed = await cp.app.request("/cp/admin/tenants/picky/redeploy", {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: "{not json",
    });
    expect(malformed.status).toBe(400);
    expect(await cp.snapshot()).toBe(before);
  });

  it("tenants started by the operator (external) are not stopped, started or redeployed here: 409", async () => {
    const external = await createTestControlPlane({
      tenants: createExternalTenantBackend("https://{slug}.tenants.example"),
    });
    try {
      await external.createOrg("elsewhere");
      await external.runner.drain();
      for (const action of ["stop", "start", "redeploy"]) {
        const reply = await external.admin("POST", `/cp/admin/tenants/elsewhere/${action}`, {});
        expect(reply.status).toBe(409);
        expect(reply.body.error.message).toContain("CP_TENANT_BACKEND=external");
      }
    } finally {
      await external.close();
    }
  });
});

describe("AMI pins", () => {
  it("are listed, pinned (replacing), and unpinned; a launch then uses the pin", async () => {
    expect((await cp.admin("GET", "/cp/admin/ami-pins")).body).toEqual({ pins: [] });
    const put = await cp.admin("PUT", "/cp/admin/ami-pins/tenant-platform/us-east-1", {
      ami_id: "ami-0123abcd",
    });
    expect(put.status, put.text).toBe(200);
    expect(put.body.pin).toMatchObject({
      runtime: "tenant-platform",
      region: "us-east-1",
      ami_id: "ami-0123abcd",
    });
    await cp.admin("PUT", "/cp/admin/ami-pins/hermes/eu-west-1", { ami_id: "ami-00000000aaaa" });
    const replaced = await cp.admin("PUT", "/cp/admin/ami-pins/tenant-platform/us-east-1", {
      ami_id: "ami-0fedcba987654321",
    });
    expect(replaced.body.pin.ami_id).toBe("ami-0fedcba987654321");
    const listed = await cp.admin("GET", "/cp/admin/ami-pins");
    expect(listed.body.pins.map((p: { runtime: string; ami_id: string }) => [p.runtime, p.ami_id])).toEqual([
      ["hermes", "ami-00000000aaaa"],
      ["tenant-platform", "ami-0fedcba987654321"],
    ]);
    expect(await chooseAmi(cp.db.db, TENANT_RUNTIME, "us-east-1", null)).toEqual({
      amiId: "ami-0fedcba987654321",
      source: "pin",
    });
    const removed = await cp.admin("DELETE", "/cp/admin/ami-pins/tenant-platform/us-east-1");
    expect(removed.status).toBe(204);
    expect(await chooseAmi(cp.db.db, TENANT_RUNTIME, "us-east-1", "ami-11112222")).toEqual({
      amiId: "ami-11112222",
      source: "EC2_AMI",
    });
    expect((await cp.admin("GET", "/cp/admin/ami-pins")).body.pins).toHaveLength(1);
  });
});

import type { ErrorEnvelope } from "@molecule/contracts";
import { deriveTenantSigningKey, hashToken } from "@molecule/identity";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { createApp } from "./app.ts";
import { cpOrgs, cpTenantCredentials } from "./db/schema.ts";
import { ADMIN_TOKEN, createTestControlPlane, SHARED_SECRET, type TestControlPlane } from "./testing.ts";

let cp: TestControlPlane;

beforeAll(async () => {
  cp = await createTestControlPlane();
});
afterAll(() => cp.close());

describe("orgs (admin API)", () => {
  it("creates an org, shows its credential and admin token once, and stores only the credential's hash", async () => {
    const created = await cp.admin("POST", "/cp/orgs", { slug: "acme", name: "Acme" });
    expect(created.status).toBe(201);
    expect(created.body.org).toMatchObject({ slug: "acme", name: "Acme", status: "provisioning" });
    expect(created.body.org.id).toMatch(/^org_/);
    const credential: string = created.body.tenant_credential;
    const adminToken: string = created.body.tenant_admin_token;
    expect(credential).toMatch(/^mct_/);
    expect(adminToken.length).toBeGreaterThanOrEqual(16);

    const stored = await cp.db.db.select().from(cpTenantCredentials);
    expect(stored).toEqual([
      expect.objectContaining({ tokenHash: hashToken(credential), orgId: created.body.org.id }),
    ]);
    const dump = await cp.snapshot();
    expect(dump).not.toContain(credential);
    expect(dump).not.toContain(adminToken);

    const listed = await cp.admin("GET", "/cp/orgs");
    expect(listed.body.orgs.map((org: { slug: string }) => org.slug)).toEqual(["acme"]);
    expect(listed.text).not.toContain(credential);
    const one = await cp.admin("GET", "/cp/orgs/acme");
    expect(one.status).toBe(200);
    expect(one.text).not.toContain(credential);
    expect(one.text).not.toContain(adminToken);
  });

  it("provisions the tenant in the background with the org's environment (secrets listed, derived signing key)", async () => {
    const { orgId, credential } = await cp.createOrg("globex");
    expect(cp.tenants.inspect(orgId)).toBeUndefined();
    await cp.runner.drain();
    const tenant = cp.tenants.inspect(orgId);
    expect(tenant?.running).toBe(true);
    expect(tenant?.env).toMatchObject({
      MOLECULE_ORG_ID: orgId,
      CP_PROVISION_URL: "http://127.0.0.1:8090",
      CP_TENANT_TOKEN: credential,
      PROVISION_SHARED_SECRET: deriveTenantSigningKey(SHARED_SECRET, orgId),
      MOLECULE_ENV: "production",
      MOLECULE_DEPLOYMENT: "cp-test",
    });
    expect(tenant?.env.PROVISION_SHARED_SECRET).not.toBe(SHARED_SECRET);
    expect(tenant?.env.SECRETS_ENCRYPTION_KEY).toMatch(/^[0-9a-f]{64}$/);
    expect(tenant?.env.ADMIN_TOKEN).toMatch(/^mat_/);
    expect([...(tenant?.secretKeys ?? [])].sort()).toEqual(
      [
        "ADMIN_TOKEN",
        "CP_TENANT_TOKEN",
        "PROVISION_SHARED_SECRET",
        "SECRETS_ENCRYPTION_KEY",
        "TENANT_BACKUP_S3_SECRET_ACCESS_KEY",
      ].sort(),
    );

    const shown = await cp.admin("GET", "/cp/orgs/globex");
    expect(shown.body.provision_status).toMatchObject({
      status: "provisioning",
      tenant_url: "http://tenant-globex.invalid:8080",
      events: [],
      last_error: null,
    });
    expect(shown.body.operation).toMatchObject({ kind: "provision_tenant", status: "succeeded" });
  });

  it("boot events are listed and `ready` / `failed` move the org", async () => {
    const org = await cp.createOrg("initech");
    await cp.runner.drain();
    for (const stage of ["container_started", "migrated", "listening", "ready"]) {
      const sent = await cp.tenant(org, "POST", "/cp/tenants/boot-event", { body: { stage } });
      expect(sent.status).toBe(204);
    }
    let shown = await cp.admin("GET", "/cp/orgs/initech");
    expect(shown.body.org.status).toBe("ready");
    expect(shown.body.provision_status.events.map((event: { stage: string }) => event.stage)).toEqual([
      "container_started",
      "migrated",
      "listening",
      "ready",
    ]);
    const failed = await cp.tenant(org, "POST", "/cp/tenants/boot-event", {
      body: { stage: "failed", detail: "migrations failed: disk full" },
    });
    expect(failed.status).toBe(204);
    shown = await cp.admin("GET", "/cp/orgs/initech");
    expect(shown.body.provision_status).toMatchObject({
      status: "failed",
      last_error: "migrations failed: disk full",
    });
    const bad = await cp.tenant(org, "POST", "/cp/tenants/boot-event", { body: { stage: "exploded" } });
    expect(bad.status).toBe(400);
  });

  it("a tenant provision that keeps failing leaves the org failed with the error shown", async () => {
    cp.tenants.failNext("provision", undefined, 10);
    await cp.createOrg("umbrella");
    for (let attempt = 0; attempt < 3; attempt++) {
      await cp.runner.drain();
      cp.clock.advance(60_000);
    }
    const shown = await cp.admin("GET", "/cp/orgs/umbrella");
    expect(shown.body.org.status).toBe("failed");
    expect(shown.body.provision_status.last_error).toContain("provision failed");
    expect(shown.body.operation).toMatchObject({ status: "failed", attempts: 3 });
  });

  it("refuses a duplicate slug (409) and bad bodies (400)", async () => {
    await cp.createOrg("hooli");
    const again = await cp.admin("POST", "/cp/orgs", { slug: "hooli", name: "Other" });
    expect(again.status).toBe(409);
    expect(again.body.error).toMatchObject({ code: "conflict" });
    expect(again.body.error.requestId).toMatch(/^req_/);
    for (const body of [
      { slug: "X", name: "a" },
      { slug: "fine-slug" },
      { slug: "fine-slug", name: "a", extra: 1 },
    ]) {
      const refused = await cp.admin("POST", "/cp/orgs", body);
      expect(refused.status).toBe(400);
      expect(refused.body.error.code).toBe("bad_request");
    }
    const notJson = await cp.admin("POST", "/cp/orgs", undefined, { "content-type": "application/json" });
    expect(notJson.status).toBe(400);
  });

  it("honours Idempotency-Key: same body → the same org and credentials; other body → 409", async () => {
    const headers = { "idempotency-key": "create-vandelay" };
    const first = await cp.admin("POST", "/cp/orgs", { slug: "vandelay", name: "Vandelay" }, headers);
    const second = await cp.admin("POST", "/cp/orgs", { slug: "vandelay", name: "Vandelay" }, headers);
    expect(first.status).toBe(201);
    expect(second.status).toBe(201);
    expect(second.body).toEqual(first.body);
    const other = await cp.admin("POST", "/cp/orgs", { slug: "vandelay2", name: "Vandelay" }, headers);
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe("idempotency_key_reused");
    const orgs = await cp.db.db.select().from(cpOrgs);
    expect(orgs.filter((org) => org.slug.startsWith("vandelay"))).toHaveLength(1);
  });

  it("is_canary: stored, shown, handed to the tenant backend, and part of the Idempotency-Key's body", async () => {
    // A control plane of its own: the one above still holds the failing tenant backend's queued faults.
    const cp = await createTestControlPlane();
    onTestFinished(() => cp.close());
    const headers = { "idempotency-key": "create-canary" };
    const body = { slug: "canary-co", name: "Canary", is_canary: true };
    const created = await cp.admin("POST", "/cp/orgs", body, headers);
    expect(created.status).toBe(201);
    expect(created.body.org.is_canary).toBe(true);
    expect((await cp.admin("POST", "/cp/orgs", body, headers)).body).toEqual(created.body);
    const other = await cp.admin("POST", "/cp/orgs", { ...body, is_canary: false }, headers);
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe("idempotency_key_reused");
    await cp.runner.drain();
    expect(cp.tenants.inspect(created.body.org.id)?.isCanary).toBe(true);
    expect((await cp.admin("GET", "/cp/orgs/canary-co")).body.org.is_canary).toBe(true);

    const plain = await cp.createOrg("not-canary");
    await cp.runner.drain();
    expect(cp.tenants.inspect(plain.orgId)?.isCanary).toBe(false);
    expect((await cp.admin("GET", "/cp/orgs/not-canary")).body.org.is_canary).toBe(false);
    const refused = await cp.admin("POST", "/cp/orgs", { slug: "bad-canary", name: "x", is_canary: "yes" });
    expect(refused.status).toBe(400);
  });

  it("GET of an unknown slug is 404", async () => {
    const missing = await cp.admin("GET", "/cp/orgs/nobody-here");
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe("not_found");
  });
});

describe("admin auth", () => {
  it("refuses without a token, with a wrong one, and with a tenant credential; changes nothing", async () => {
    const org = await cp.createOrg("authcheck");
    const before = await cp.snapshot();
    const cases: Record<string, string>[] = [
      {},
      { authorization: "Bearer wrong-token-wrong-token" },
      { authorization: `Bearer ${ADMIN_TOKEN}x` },
      { authorization: `Basic ${ADMIN_TOKEN}` },
      { authorization: `Bearer ${org.credential}` },
    ];
    for (const headers of cases) {
      for (const [method, path, body] of [
        ["GET", "/cp/orgs", undefined],
        ["GET", "/cp/orgs/authcheck", undefined],
        ["POST", "/cp/orgs", { slug: "intruder", name: "x" }],
        ["DELETE", "/cp/orgs/authcheck", { confirm: "authcheck" }],
        ["POST", "/cp/admin/reconcile", undefined],
        ["GET", "/cp/admin/stats", undefined],
      ] as const) {
        const response = await cp.app.request(path, {
          method,
          headers: { "content-type": "application/json", ...headers },
          ...(body ? { body: JSON.stringify(body) } : {}),
        });
        expect(response.status).toBe(401);
        expect(((await response.json()) as ErrorEnvelope).error.code).toBe("unauthorized");
      }
    }
    expect(await cp.snapshot()).toBe(before);
  });

  it("with CP_ADMIN_API_TOKEN unset every admin call is refused, whatever is presented", async () => {
    const closed = createApp({ ...cp.deps, settings: { ...cp.deps.settings, adminToken: null } });
    for (const authorization of [
      undefined,
      "Bearer ",
      `Bearer ${ADMIN_TOKEN}`,
      "Bearer null",
      "Bearer undefined",
    ]) {
      for (const [method, path] of [
        ["GET", "/cp/orgs"],
        ["POST", "/cp/admin/reconcile"],
        ["GET", "/cp/admin/stats"],
      ]) {
        const response = await closed.request(path as string, {
          method,
          headers: authorization === undefined ? {} : { authorization },
        });
        expect(response.status).toBe(401);
        expect(((await response.json()) as ErrorEnvelope).error.message).toContain("CP_ADMIN_API_TOKEN");
      }
    }
  });
});

describe("deleting an org", () => {
  it("needs the slug as confirmation", async () => {
    await cp.createOrg("confirm-me");
    const before = await cp.snapshot();
    expect((await cp.admin("DELETE", "/cp/orgs/confirm-me")).status).toBe(400);
    expect((await cp.admin("DELETE", "/cp/orgs/confirm-me", {})).status).toBe(400);
    expect((await cp.admin("DELETE", "/cp/orgs/confirm-me", { confirm: "confirm-you" })).status).toBe(400);
    expect(await cp.snapshot()).toBe(before);
    expect((await cp.admin("DELETE", "/cp/orgs/nobody", { confirm: "nobody" })).status).toBe(404);
  });
});

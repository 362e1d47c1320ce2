/**
 * Backup reports: a tenant reports each dump (signed, for its own org only) and `GET /cp/admin/backups` shows every
 * tenant's last backup and last succeeded one, flagging stale (none within BACKUP_STALE_AFTER, or none ever) and
 * failed ones. Refusals are the error envelope and change nothing. Provisioning hands the backup settings to the
 * tenant.
 */
import { BackupsOverview } from "@molecule/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestControlPlane, type Reply, type TenantIdentity, type TestControlPlane } from "./testing.ts";

const HOUR = 3_600_000;
const STALE_AFTER = 36 * HOUR;
const SHA = "ab".repeat(32);
let cp: TestControlPlane;
let alpha: TenantIdentity;
let beta: TenantIdentity;
let never: TenantIdentity;

beforeAll(async () => {
  cp = await createTestControlPlane({
    settings: {
      backups: {
        staleAfterMs: STALE_AFTER,
        tenantEnv: {
          TENANT_BACKUP_S3_PREFIX: "s3://molecule-backups/tenants",
          TENANT_BACKUP_INTERVAL: "12h",
        },
      },
    },
  });
  alpha = await cp.createOrg("backup-alpha");
  beta = await cp.createOrg("backup-beta");
  never = await cp.createOrg("backup-never");
  await cp.runner.drain();
});
afterAll(() => cp.close());

function report(slug: string, overrides: Record<string, unknown> = {}) {
  const finished = cp.clock.now();
  const started = new Date(finished.getTime() - 5_000);
  return {
    slug,
    outcome: "succeeded",
    location: `s3://molecule-backups/tenants/${slug}/${started.toISOString().replace(/[:.]/g, "-")}.dump`,
    format: "pg_dump_custom",
    size_bytes: 4096,
    sha256: SHA,
    started_at: started.toISOString(),
    finished_at: finished.toISOString(),
    ...overrides,
  };
}

const post = (who: TenantIdentity, body: unknown) =>
  cp.tenant(who, "POST", "/cp/tenants/backup-report", { body });

async function overview(): Promise<BackupsOverview> {
  const reply = await cp.admin("GET", "/cp/admin/backups");
  expect(reply.status, reply.text).toBe(200);
  return BackupsOverview.parse(reply.body);
}

const line = (view: BackupsOverview, slug: string) => {
  const found = view.tenants.find((tenant) => tenant.slug === slug);
  if (!found) throw new Error(`no line for ${slug}`);
  return found;
};

describe("backup reports and the operator's overview", () => {
  it("a tenant provisioned by the control plane gets the backup settings in its environment", () => {
    expect(cp.tenants.inspect(alpha.orgId)?.env).toMatchObject({
      TENANT_BACKUP_S3_PREFIX: "s3://molecule-backups/tenants",
      TENANT_BACKUP_INTERVAL: "12h",
    });
  });

  it("shows every tenant with no backup yet as stale, with nothing to restore", async () => {
    const view = await overview();
    expect(view.stale_after_ms).toBe(STALE_AFTER);
    expect(view.tenants.map((tenant) => tenant.slug)).toEqual([
      "backup-alpha",
      "backup-beta",
      "backup-never",
    ]);
    expect(line(view, "backup-never")).toMatchObject({
      org_id: never.orgId,
      last: null,
      last_success: null,
      stale: true,
      failed: false,
    });
    expect(view.summary).toEqual({ tenants: 3, stale: 3, failed: 0 });
  });

  it("records a succeeded report once, even when the tenant sends it again", async () => {
    const body = report(alpha.slug);
    expect((await post(alpha, body)).status).toBe(204);
    // A retried call (new nonce, same report) records nothing more.
    expect((await post(alpha, body)).status).toBe(204);
    expect((await cp.rowCounts()).cp_tenant_backups).toBe(1);
    const view = await overview();
    expect(line(view, alpha.slug)).toMatchObject({
      stale: false,
      failed: false,
      last: { outcome: "succeeded", location: body.location, size_bytes: 4096, sha256: SHA, error: null },
      last_success: { location: body.location },
    });
    expect(view.summary).toEqual({ tenants: 3, stale: 2, failed: 0 });
  });

  it("flags a tenant whose latest backup failed, keeping its last succeeded one", async () => {
    const good = report(beta.slug);
    expect((await post(beta, good)).status).toBe(204);
    cp.clock.advance(HOUR);
    const bad = report(beta.slug, {
      outcome: "failed",
      size_bytes: null,
      sha256: null,
      error: "upload failed: S3 answered 503",
    });
    expect((await post(beta, bad)).status).toBe(204);
    const view = await overview();
    expect(line(view, beta.slug)).toMatchObject({
      failed: true,
      stale: false,
      last: { outcome: "failed", location: bad.location, error: "upload failed: S3 answered 503" },
      last_success: { outcome: "succeeded", location: good.location },
    });
  });

  it("flags a tenant stale once its last succeeded backup is older than BACKUP_STALE_AFTER", async () => {
    cp.clock.advance(STALE_AFTER - HOUR - 1_000);
    expect(line(await overview(), alpha.slug).stale).toBe(false);
    cp.clock.advance(2 * HOUR);
    expect(line(await overview(), alpha.slug).stale).toBe(true);
    // A new backup clears it.
    expect((await post(alpha, report(alpha.slug))).status).toBe(204);
    expect(line(await overview(), alpha.slug).stale).toBe(false);
  });
});

describe("refusals (the error envelope, nothing recorded)", () => {
  async function refusedWith(reply: Promise<Reply>, status: number, code: string) {
    const before = await cp.snapshot({ exceptNonces: true });
    const answered = await reply;
    expect(answered.status).toBe(status);
    expect(answered.body.error.code).toBe(code);
    expect(answered.body.error.requestId).toMatch(/^req_/);
    expect(await cp.snapshot({ exceptNonces: true })).toBe(before);
    return answered.body.error.message as string;
  }

  it("refuses a report without a tenant credential or with a bad signature (401)", async () => {
    await refusedWith(
      cp.tenant(alpha, "POST", "/cp/tenants/backup-report", { body: report(alpha.slug), credential: null }),
      401,
      "unauthorized",
    );
    await refusedWith(
      cp.tenant(alpha, "POST", "/cp/tenants/backup-report", {
        body: report(alpha.slug),
        sendBody: JSON.stringify(report(alpha.slug, { size_bytes: 1 })),
      }),
      401,
      "unauthorized",
    );
    // The admin token is not a tenant credential.
    const admin = await cp.admin("POST", "/cp/tenants/backup-report", report(alpha.slug));
    expect(admin.status).toBe(401);
  });

  it("refuses a report for another org, or for a location under another org's slug (403)", async () => {
    expect(await refusedWith(post(alpha, report(beta.slug)), 403, "forbidden")).toContain("its own org");
    const elsewhere = report(alpha.slug, {
      location: `s3://molecule-backups/tenants/${beta.slug}/2026-01-01T00-00-00-000Z.dump`,
    });
    expect(await refusedWith(post(alpha, elsewhere), 403, "forbidden")).toContain("own slug");
  });

  const bad = (overrides: Record<string, unknown>) => () => JSON.stringify(report(alpha.slug, overrides));
  it.each([
    ["not JSON", () => "{"],
    ["no outcome", bad({ outcome: undefined })],
    ["an unknown outcome", bad({ outcome: "partial" })],
    ["an unknown format", bad({ format: "zip" })],
    ["a location that is not s3://", bad({ location: "https://example.com/backup" })],
    ["a malformed checksum", bad({ sha256: "XYZ" })],
    ["a negative size", bad({ size_bytes: -1 })],
    ["a success with no checksum", bad({ sha256: null })],
    ["a failure with no reason", bad({ outcome: "failed" })],
    ["a time that is not a time", bad({ started_at: "yesterday" })],
    [
      "finished before started",
      bad({ started_at: "2026-02-01T00:00:00Z", finished_at: "2026-01-01T00:00:00Z" }),
    ],
    ["an unknown field", bad({ org_id: "org_x" })],
    ["a control character in the error", bad({ outcome: "failed", error: "a\u0000b" })],
  ])("refuses %s (400)", async (_what, raw) => {
    await refusedWith(
      cp.tenant(alpha, "POST", "/cp/tenants/backup-report", { rawBody: raw() }),
      400,
      "bad_request",
    );
  });

  it("serves the overview to the admin token only (401 without it, or with a tenant credential)", async () => {
    const none = await cp.app.request("/cp/admin/backups");
    expect(none.status).toBe(401);
    expect(((await none.json()) as { error: { code: string } }).error.code).toBe("unauthorized");
    const wrong = await cp.admin("GET", "/cp/admin/backups", undefined, {
      authorization: `Bearer ${alpha.credential}`,
    });
    expect(wrong.status).toBe(401);
    expect(wrong.body.error).toMatchObject({
      code: "unauthorized",
      requestId: expect.stringMatching(/^req_/),
    });
  });
});

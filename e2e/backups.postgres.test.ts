/**
 * Tenant backups on PostgreSQL: a tenant (in process, real PostgreSQL) dumps its database with pg_dump to S3 (moto
 * behind the fault proxy) and reports it, signed, to a real control plane process, whose GET /cp/admin/backups then
 * shows it. The dump restored into a fresh database brings the workspaces back, their secrets still sealed (readable
 * with the tenant's key only) and a workspace token issued before the backup still authenticates. Two replicas back
 * up once per interval; a failing upload and a missing pg_dump are recorded and reported as failed, and the tenant
 * keeps serving.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { type AwsEmulator, startAwsEmulator } from "@molecule/aws-emulator";
import { BackupsOverview, TenantBackupRun } from "@molecule/contracts";
import { createDatabase, restorePostgres, workspaceSecrets, workspaces } from "@molecule/db";
import { deriveTenantSigningKey, Sealer } from "@molecule/identity";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { buildTenantBackups } from "@molecule/tenant-platform/backups";
import { loadConfig } from "@molecule/tenant-platform/config";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ControlPlaneProcess, startControlPlaneProcess } from "../test-support/control-plane.ts";
import { freePort } from "../test-support/net.ts";
import { createEmptyTestDatabase } from "../test-support/pg.ts";
import { createTestPlatform, type TestPlatform } from "../test-support/platform.ts";
import { runRestore } from "../test-support/process.ts";

const BUCKET = "molecule-backups";
const SLUG = "acme-pg";
const SHARED_SECRET = "backup-e2e-shared-secret-0123456789abcdef";
const credentials = { accessKeyId: "test", secretAccessKey: "test" };

let aws: AwsEmulator;
let s3: S3Client;
let cp: ControlPlaneProcess;
let orgId: string;
let credential: string;
let platform: TestPlatform;
const cleanups: (() => Promise<void> | void)[] = [];

/** A scratch folder of this file, removed at the end. */
function scratch(): string {
  const dir = mkdtempSync(join(tmpdir(), "molecule-backups-pg-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The tenant's configuration as main() reads it, pointed at the emulator and the control plane. */
function tenantEnv(overrides: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    MOLECULE_ORG_ID: orgId,
    CP_PROVISION_URL: cp.url,
    CP_TENANT_TOKEN: credential,
    PROVISION_SHARED_SECRET: deriveTenantSigningKey(SHARED_SECRET, orgId),
    TENANT_BACKUP_S3_PREFIX: `s3://${BUCKET}/tenants`,
    TENANT_BACKUP_S3_ENDPOINT: aws.endpoint,
    TENANT_BACKUP_S3_ACCESS_KEY_ID: "test",
    TENANT_BACKUP_S3_SECRET_ACCESS_KEY: "test",
    PATH: process.env.PATH,
    ...overrides,
  };
}

beforeAll(async () => {
  aws = await startAwsEmulator();
  s3 = new S3Client({ endpoint: aws.motoEndpoint, region: "us-east-1", credentials, forcePathStyle: true });
  await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
  const dataDir = scratch();
  cp = await startControlPlaneProcess({
    dataDir,
    env: {
      PROVISION_SHARED_SECRET: SHARED_SECRET,
      CP_TENANT_BACKEND: "external",
      TENANT_URL_TEMPLATE: "http://{slug}.invalid:8080",
    },
  });
  const created = await cp.admin("POST", "/cp/orgs", { slug: SLUG, name: "Acme" });
  expect(created.status).toBe(201);
  orgId = created.body.org.id;
  credential = created.body.tenant_credential;
  const config = loadConfig(tenantEnv());
  platform = await createTestPlatform(
    createFakeProvisioner(),
    { orgId },
    { backups: (deps, database) => buildTenantBackups(config, deps, database, SLUG) },
  );
}, 180_000);

afterAll(async () => {
  await platform?.close();
  await cp?.kill("SIGTERM");
  await aws?.close();
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function objectBytes(location: string): Promise<Buffer> {
  const key = location.replace(`s3://${BUCKET}/`, "");
  const object = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return Buffer.from(
    await (object.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
  );
}

async function keysInBucket(): Promise<string[]> {
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET }));
  return (listed.Contents ?? []).map((object) => object.Key ?? "").sort();
}

async function overviewLine() {
  const reply = await cp.admin("GET", "/cp/admin/backups");
  expect(reply.status).toBe(200);
  const line = BackupsOverview.parse(reply.body).tenants.find((tenant) => tenant.slug === SLUG);
  if (!line) throw new Error("the org has no line in the overview");
  return line;
}

describe("a tenant's backup on PostgreSQL", () => {
  let workspaceId: string;
  let workspaceToken: string;
  let backup: TenantBackupRun;

  it("needs the admin token: none is 401, a workspace token 403, both with the envelope", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "kept", external: true },
    });
    expect(created.status).toBe(202);
    workspaceId = created.body.workspace.id;
    const registered = await platform.call("POST", "/registry/register", {
      token: created.body.connection.registration_token,
      body: { id: workspaceId },
    });
    expect(registered.status).toBe(200);
    workspaceToken = registered.body.auth_token;
    const put = await platform.call("PUT", `/workspaces/${workspaceId}/secrets/API_KEY`, {
      body: { value: "sealed-value-42" },
    });
    expect(put.status).toBe(200);

    const anonymous = await platform.call("POST", "/admin/backup", { token: null });
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error).toMatchObject({ code: "unauthorized", requestId: expect.any(String) });
    const asWorkspace = await platform.call("POST", "/admin/backup", { token: workspaceToken });
    expect(asWorkspace.status).toBe(403);
    expect(asWorkspace.body.error.code).toBe("forbidden");
    expect(await keysInBucket()).toEqual([]);
  });

  it("dumps to s3://…/<slug>/<timestamp>.dump on demand and the control plane shows the report", async () => {
    const answered = await platform.call("POST", "/admin/backup");
    expect(answered.status).toBe(200);
    backup = TenantBackupRun.parse(answered.body);
    expect(backup).toMatchObject({ status: "succeeded", format: "pg_dump_custom", error: null });
    expect(backup.location).toMatch(
      new RegExp(`^s3://${BUCKET}/tenants/${SLUG}/\\d{4}-\\d{2}-\\d{2}T\\d{2}-\\d{2}-\\d{2}-\\d{3}Z\\.dump$`),
    );
    expect(backup.reported_at).not.toBeNull();
    const bytes = await objectBytes(backup.location);
    expect(bytes.length).toBe(backup.size_bytes);
    expect(bytes.subarray(0, 5).toString("latin1")).toBe("PGDMP");
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(backup.sha256);

    const line = await overviewLine();
    expect(line).toMatchObject({ org_id: orgId, stale: false, failed: false });
    expect(line.last_success).toMatchObject({
      location: backup.location,
      size_bytes: backup.size_bytes,
      sha256: backup.sha256,
      format: "pg_dump_custom",
    });
    const listed = await platform.call("GET", "/admin/backups");
    expect(listed.body.backups[0]).toEqual(backup);
  });

  it("restored into a fresh database: the workspace, its sealed secret and its token are back", async () => {
    const fresh = await createEmptyTestDatabase();
    cleanups.push(() => fresh.drop());
    await restorePostgres(fresh.url, Readable.from(await objectBytes(backup.location)), "pg_dump_custom", {
      searchPath: process.env.PATH ?? "",
    });
    await fresh.migrate(); // already at the latest migration: nothing to do
    const restored = await createTestPlatform(createFakeProvisioner(), { orgId }, { database: fresh });
    cleanups.push(() => restored.close());

    const shown = await restored.call("GET", `/workspaces/${workspaceId}`);
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({ id: workspaceId, name: "kept" });
    // The token issued before the backup authenticates, and the secret opens with the tenant's key.
    const values = await restored.call("GET", `/workspaces/${workspaceId}/secrets/values`, {
      token: workspaceToken,
    });
    expect(values.status).toBe(200);
    expect(JSON.stringify(values.body)).toContain("sealed-value-42");
    // Sealed at rest: the stored row never holds the value.
    const rows = await fresh.db.select().from(workspaceSecrets);
    expect(rows).toHaveLength(1);
    expect(JSON.stringify(rows)).not.toContain("sealed-value-42");
    // Another key cannot open it.
    const otherKey = await createTestPlatform(
      createFakeProvisioner(),
      { orgId },
      { database: fresh, sealer: Sealer.fromConfig("ff".repeat(32), 1, "") },
    );
    cleanups.push(() => otherKey.close());
    const refused = await otherKey.call("GET", `/workspaces/${workspaceId}/secrets/values`, {
      token: workspaceToken,
    });
    expect(refused.status).toBeGreaterThanOrEqual(400);
    expect(JSON.stringify(refused.body)).not.toContain("sealed-value-42");
  });

  it("a plain-SQL backup (TENANT_BACKUP_FORMAT=plain) restores with the restore command", async () => {
    const config = loadConfig(tenantEnv({ TENANT_BACKUP_FORMAT: "plain" }));
    const plain = await buildTenantBackups(config, platform.deps, platform.database, SLUG)?.runNow();
    expect(plain).toMatchObject({ status: "succeeded", format: "pg_dump_plain" });
    expect(plain?.location).toMatch(/\.sql$/);
    const bytes = await objectBytes(plain?.location ?? "");
    expect(bytes.toString("utf8")).toContain("PostgreSQL database dump");
    const file = join(scratch(), plain?.location.split("/").at(-1) ?? "backup.sql");
    writeFileSync(file, bytes);
    const fresh = await createEmptyTestDatabase();
    cleanups.push(() => fresh.drop());
    const restored = await runRestore([file, "--database-url", fresh.url, "--sha256", plain?.sha256 ?? ""]);
    expect(restored.output).toContain("restored");
    expect(restored.code).toBe(0);
    const rows = await fresh.db.select().from(workspaces);
    expect(rows.map((row) => row.id)).toContain(workspaceId);
  });

  it("two replicas on one database back up once per interval", async () => {
    const config = loadConfig(tenantEnv({ TENANT_BACKUP_INTERVAL: "1h" }));
    // The second replica is another process's view: its own connections, its own advisory-lock session.
    const replica = await createDatabase({ url: platform.database.url, maxConnections: 3 });
    cleanups.push(() => replica.close());
    const first = buildTenantBackups(config, platform.deps, platform.database, SLUG);
    const second = buildTenantBackups(
      config,
      { ...platform.deps, db: replica.db, advisoryLock: replica.withAdvisoryLock },
      replica,
      SLUG,
    );
    if (!first || !second) throw new Error("backups are configured");
    // The on-demand backup above is recent: neither replica finds one due.
    expect(await first.runIfDue()).toBeNull();
    platform.clock.advance(3_600_000);
    const before = (await keysInBucket()).length;
    const [a, b] = await Promise.all([first.runIfDue(), second.runIfDue()]);
    expect([a, b].filter((run) => run !== null)).toHaveLength(1);
    expect([a?.status, b?.status].filter(Boolean)).toEqual(["succeeded"]);
    // Whichever lost the lock finds the new backup now and does not make another.
    expect(await first.runIfDue()).toBeNull();
    expect(await second.runIfDue()).toBeNull();
    expect((await keysInBucket()).length).toBe(before + 1);
  });

  it("a failing upload is recorded and reported as failed, leaves no object, and the tenant keeps serving", async () => {
    const before = await keysInBucket();
    aws.inject({ action: "*", when: (call) => call.service === "s3", kind: "internal-error", times: 20 });
    const answered = await platform.call("POST", "/admin/backup");
    aws.clearFaults();
    expect(answered.status).toBe(200);
    const failed = TenantBackupRun.parse(answered.body);
    expect(failed).toMatchObject({ status: "failed", size_bytes: null, sha256: null });
    expect(failed.error).toContain(`backup to ${failed.location} failed`);
    expect(failed.error).not.toContain("test"); // no credential in the reason
    expect(failed.reported_at).not.toBeNull();
    expect(await keysInBucket()).toEqual(before);
    const line = await overviewLine();
    expect(line).toMatchObject({
      failed: true,
      stale: false,
      last: { outcome: "failed", error: failed.error },
    });
    expect((await platform.call("GET", "/health")).status).toBe(200);
    expect((await platform.call("GET", `/workspaces/${workspaceId}`)).status).toBe(200);
    // And the next backup goes through again.
    const again = TenantBackupRun.parse((await platform.call("POST", "/admin/backup")).body);
    expect(again.status).toBe("succeeded");
    expect((await overviewLine()).failed).toBe(false);
  });

  it("after a failed scheduled backup the next try waits an hour, not a whole interval", async () => {
    const config = loadConfig(tenantEnv({ TENANT_BACKUP_INTERVAL: "3h" }));
    const scheduled = buildTenantBackups(config, platform.deps, platform.database, SLUG);
    if (!scheduled) throw new Error("backups are configured");
    platform.clock.advance(3 * 3_600_000);
    aws.inject({ action: "*", when: (call) => call.service === "s3", kind: "unavailable", times: 20 });
    const failed = await scheduled.runIfDue();
    aws.clearFaults();
    expect(failed?.status).toBe("failed");
    expect(await scheduled.runIfDue()).toBeNull();
    platform.clock.advance(3_600_000 - 1_000);
    expect(await scheduled.runIfDue()).toBeNull();
    platform.clock.advance(1_000);
    expect((await scheduled.runIfDue())?.status).toBe("succeeded");
    expect(await scheduled.runIfDue()).toBeNull();
  });

  it("a report the control plane did not get is sent again at the next check", async () => {
    const unreachable = loadConfig(
      tenantEnv({
        TENANT_BACKUP_REPORT_URL: `http://127.0.0.1:${await freePort()}/cp/tenants/backup-report`,
      }),
    );
    const lost = await buildTenantBackups(unreachable, platform.deps, platform.database, SLUG)?.runNow();
    expect(lost).toMatchObject({ status: "succeeded", reported_at: null });
    expect((await overviewLine()).last?.location).not.toBe(lost?.location);
    // The next check (nothing due: the backup is recent) delivers it.
    const config = loadConfig(tenantEnv());
    expect(await buildTenantBackups(config, platform.deps, platform.database, SLUG)?.runIfDue()).toBeNull();
    expect((await overviewLine()).last_success?.location).toBe(lost?.location);
    const listed = await platform.call("GET", "/admin/backups");
    const row = listed.body.backups.find((run: { id: number }) => run.id === lost?.id);
    expect(row.reported_at).not.toBeNull();
  });

  it("without pg_dump on PATH a backup fails with a line saying what to install", async () => {
    const config = loadConfig(tenantEnv({ PATH: scratch() }));
    const backups = buildTenantBackups(config, platform.deps, platform.database, SLUG);
    const run = await backups?.runNow();
    expect(run).toMatchObject({ status: "failed" });
    expect(run?.error).toContain("pg_dump was not found on PATH");
    expect(run?.error).toContain("postgresql-client");
    expect((await overviewLine()).last?.error).toBe(run?.error);
  });
});

describe("a tenant without backups configured", () => {
  let bare: TestPlatform;
  beforeAll(async () => {
    bare = await createTestPlatform(createFakeProvisioner());
  });
  afterAll(() => bare?.close());

  it("answers 409 to POST /admin/backup, naming the variable", async () => {
    const answered = await bare.call("POST", "/admin/backup");
    expect(answered.status).toBe(409);
    expect(answered.body.error.code).toBe("conflict");
    expect(answered.body.error.message).toContain("TENANT_BACKUP_S3_PREFIX");
  });
});

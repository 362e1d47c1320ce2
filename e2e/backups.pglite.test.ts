/**
 * Tenant backups on the embedded database: a standalone tenant on PGlite dumps its data folder (PGlite's own
 * `dumpDataDir`, a gzipped tar) to S3 (moto behind the fault proxy); restored into a new data folder it brings the
 * workspaces back, their secrets still sealed and a workspace token issued before the backup still valid. Without a
 * control plane nothing is reported.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CreateBucketCommand, GetObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { type AwsEmulator, startAwsEmulator } from "@molecule/aws-emulator";
import { TenantBackupRun } from "@molecule/contracts";
import { createDatabase, type Database, workspaceSecrets } from "@molecule/db";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { buildTenantBackups } from "@molecule/tenant-platform/backups";
import { loadConfig } from "@molecule/tenant-platform/config";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TestDatabase } from "../test-support/pg.ts";
import { createTestPlatform, type TestPlatform } from "../test-support/platform.ts";
import { runRestore } from "../test-support/process.ts";

const BUCKET = "molecule-backups-embedded";
const SLUG = "solo";
const credentials = { accessKeyId: "test", secretAccessKey: "test" };

let aws: AwsEmulator;
let s3: S3Client;
let scratch: string;
let platform: TestPlatform;
const cleanups: (() => Promise<void> | void)[] = [];

/** An embedded database as the platform's test harness takes one (it closes it, never drops a server database). */
async function embedded(dataDir: string): Promise<TestDatabase> {
  const database: Database = await createDatabase({ dataDir });
  await database.migrate();
  return { ...database, url: "", drop: () => database.close() };
}

beforeAll(async () => {
  aws = await startAwsEmulator();
  s3 = new S3Client({ endpoint: aws.motoEndpoint, region: "us-east-1", credentials, forcePathStyle: true });
  await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
  scratch = mkdtempSync(join(tmpdir(), "molecule-pglite-backups-"));
  const database = await embedded(join(scratch, "pglite"));
  cleanups.push(() => database.drop());
  const config = loadConfig({
    TENANT_BACKUP_S3_PREFIX: `s3://${BUCKET}`,
    TENANT_BACKUP_S3_ENDPOINT: aws.endpoint,
    TENANT_BACKUP_S3_ACCESS_KEY_ID: "test",
    TENANT_BACKUP_S3_SECRET_ACCESS_KEY: "test",
  });
  platform = await createTestPlatform(
    createFakeProvisioner(),
    {},
    { database, backups: (deps, db) => buildTenantBackups(config, deps, db, SLUG) },
  );
}, 180_000);

afterAll(async () => {
  await platform?.close();
  for (const cleanup of cleanups.reverse()) await cleanup();
  await aws?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe("a tenant's backup on the embedded database", () => {
  it("dumps the data folder, restores it into a new one, and the workspace, secret and token are back", async () => {
    const created = await platform.call("POST", "/workspaces", { body: { name: "kept", external: true } });
    expect(created.status).toBe(202);
    const workspaceId: string = created.body.workspace.id;
    const registered = await platform.call("POST", "/registry/register", {
      token: created.body.connection.registration_token,
      body: { id: workspaceId },
    });
    expect(registered.status).toBe(200);
    const workspaceToken: string = registered.body.auth_token;
    expect(
      (
        await platform.call("PUT", `/workspaces/${workspaceId}/secrets/API_KEY`, {
          body: { value: "embedded-secret-7" },
        })
      ).status,
    ).toBe(200);

    const answered = await platform.call("POST", "/admin/backup");
    expect(answered.status).toBe(200);
    const backup = TenantBackupRun.parse(answered.body);
    expect(backup).toMatchObject({ status: "succeeded", format: "pglite_datadir_tgz", reported_at: null });
    expect(backup.location).toMatch(new RegExp(`^s3://${BUCKET}/${SLUG}/[0-9TZ-]+\\.tar\\.gz$`));
    const object = await s3.send(
      new GetObjectCommand({ Bucket: BUCKET, Key: backup.location.replace(`s3://${BUCKET}/`, "") }),
    );
    const bytes = Buffer.from(
      await (object.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
    );
    expect(object.Metadata?.["molecule-format"]).toBe("pglite_datadir_tgz");
    expect(bytes.length).toBe(backup.size_bytes);
    expect([bytes[0], bytes[1]]).toEqual([0x1f, 0x8b]); // gzip
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(backup.sha256);

    // Restored the documented way: the restore command, the file as downloaded, its checksum checked first.
    const file = join(scratch, backup.location.split("/").at(-1) ?? "backup.tar.gz");
    writeFileSync(file, bytes);
    const restoredDir = join(scratch, "restored");
    const wrongSum = await runRestore([file, "--data-dir", restoredDir, "--sha256", "0".repeat(64)]);
    expect(wrongSum.code).toBe(1);
    expect(wrongSum.output).toContain("does not match the given sha256");
    expect(existsSync(restoredDir)).toBe(false);
    // A data folder that already holds something is refused: a restore never mixes two databases.
    const occupied = join(scratch, "occupied");
    mkdirSync(occupied);
    writeFileSync(join(occupied, "PG_VERSION"), "17");
    const intoOccupied = await runRestore([file, "--data-dir", occupied]);
    expect(intoOccupied.code).toBe(1);
    expect(intoOccupied.output).toContain("is not empty");
    const wrongTarget = await runRestore([file, "--database-url", "postgres://127.0.0.1/x"]);
    expect(wrongTarget.code).toBe(2);
    const restoring = await runRestore([file, "--data-dir", restoredDir, "--sha256", backup.sha256 ?? ""]);
    expect(restoring.output).toContain(`restored ${file}`);
    expect(restoring.code).toBe(0);
    const fresh = await embedded(restoredDir);
    cleanups.push(() => fresh.drop());
    const restored = await createTestPlatform(createFakeProvisioner(), {}, { database: fresh });
    cleanups.push(() => restored.close());
    const shown = await restored.call("GET", `/workspaces/${workspaceId}`);
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({ id: workspaceId, name: "kept" });
    const values = await restored.call("GET", `/workspaces/${workspaceId}/secrets/values`, {
      token: workspaceToken,
    });
    expect(values.status).toBe(200);
    expect(JSON.stringify(values.body)).toContain("embedded-secret-7");
    const rows = await fresh.db.select().from(workspaceSecrets);
    expect(rows).toHaveLength(1);
    expect(JSON.stringify(rows)).not.toContain("embedded-secret-7");
  });
});

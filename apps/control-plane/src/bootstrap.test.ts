/**
 * Development secrets: with nothing configured the control plane generates its admin token, signing master secret
 * and sealing key once into the data folder and keeps using them; production refuses to start without them.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deriveTenantSigningKey } from "@molecule/identity";
import { ControlPlaneClient } from "@molecule/provisioner-core";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { startControlPlaneProcess } from "../../../test-support/control-plane.ts";
import { createTestDatabase, type TestDatabase } from "../../../test-support/pg.ts";
import {
  CONTROL_PLANE_MAIN,
  killAllPlatformProcesses,
  spawnPlatform,
} from "../../../test-support/process.ts";
import { waitFor } from "../../../test-support/wait.ts";
import { resolveSecrets, SECRET_FILES } from "./bootstrap.ts";
import { loadConfig } from "./config.ts";
import { CP_MIGRATIONS } from "./db/migrations.ts";

const folders: string[] = [];
const databases: TestDatabase[] = [];
afterEach(async () => {
  await killAllPlatformProcesses();
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
  await Promise.all(databases.splice(0).map((db) => db.drop()));
});
afterAll(killAllPlatformProcesses);

function folder(): string {
  const dir = mkdtempSync(join(tmpdir(), "molecule-cp-bootstrap-"));
  folders.push(dir);
  return dir;
}

const read = (dir: string, file: string) => readFileSync(join(dir, file), "utf8").trim();

describe("resolveSecrets", () => {
  it("generates the three secrets once in development and reads them back on the next start", () => {
    const dir = folder();
    const config = loadConfig({ MOLECULE_DATA_DIR: dir });
    const first = resolveSecrets(config);
    expect(first.adminToken).toMatchObject({ created: true, persisted: true });
    expect(first.adminToken.value).toMatch(/^mca_[A-Za-z0-9_-]{43}$/);
    expect(first.provisionSharedSecret.value).toMatch(/^[0-9a-f]{64}$/);
    expect(first.secretsKey.value).toMatch(/^[0-9a-f]{64}$/);
    expect(new Set([first.provisionSharedSecret.value, first.secretsKey.value]).size).toBe(2);
    expect(read(dir, SECRET_FILES.adminToken)).toBe(first.adminToken.value);
    expect(read(dir, SECRET_FILES.provisionSharedSecret)).toBe(first.provisionSharedSecret.value);
    expect(read(dir, SECRET_FILES.secretsKey)).toBe(first.secretsKey.value);

    const again = resolveSecrets(config);
    expect(again.adminToken).toEqual({ ...first.adminToken, created: false });
    expect(again.provisionSharedSecret).toEqual({ ...first.provisionSharedSecret, created: false });
    expect(again.secretsKey).toEqual({ ...first.secretsKey, created: false });
  });

  it("uses configured values as they are and writes nothing for them", () => {
    const dir = join(folder(), "data");
    const secrets = resolveSecrets(
      loadConfig({
        MOLECULE_DATA_DIR: dir,
        CP_ADMIN_API_TOKEN: "configured-admin-token-0123",
        PROVISION_SHARED_SECRET: "s".repeat(32),
        CP_SECRETS_ENCRYPTION_KEY: "a".repeat(64),
      }),
    );
    expect(secrets.adminToken).toEqual({
      value: "configured-admin-token-0123",
      created: false,
      persisted: false,
    });
    expect(secrets.provisionSharedSecret.value).toBe("s".repeat(32));
    expect(secrets.secretsKey.value).toBe("a".repeat(64));
    expect(existsSync(dir)).toBe(false);
  });

  it("never generates in production, even for a configuration built without loadConfig", () => {
    const dir = join(folder(), "data");
    const config = loadConfig({ MOLECULE_DATA_DIR: dir });
    for (const environment of ["production", "prod"] as const) {
      expect(() => resolveSecrets({ ...config, environment })).toThrow(/production never generates secrets/);
    }
    expect(existsSync(dir)).toBe(false);
  });
});

describe("the control plane process without configured secrets", () => {
  it("starts in development, prints its generated admin token, and keeps the same secrets across a restart", async () => {
    const db = await createTestDatabase({ migrations: CP_MIGRATIONS });
    databases.push(db);
    const dataDir = folder();
    const env = {
      DATABASE_URL: db.url,
      CP_ADMIN_API_TOKEN: undefined,
      PROVISION_SHARED_SECRET: undefined,
      CP_SECRETS_ENCRYPTION_KEY: undefined,
      CP_TENANT_BACKEND: "external",
      TENANT_URL_TEMPLATE: "http://127.0.0.1:1/{slug}",
    };
    const first = await startControlPlaneProcess({ env, dataDir });
    const token = read(dataDir, SECRET_FILES.adminToken);
    expect(first.adminToken).toBe(token);
    expect(first.output()).toContain(`Admin token (generated now): ${token}`);
    expect(first.output()).toContain(`Generated for development: ${dataDir}/${SECRET_FILES.adminToken}`);
    expect((await first.admin("GET", "/cp/orgs")).status).toBe(200);
    const unauthorized = await fetch(`${first.url}/cp/orgs`, { headers: { authorization: "Bearer wrong" } });
    expect(unauthorized.status).toBe(401);

    // the generated sealing key seals the tenant's environment and opens it again to start the tenant
    const created = await first.admin("POST", "/cp/orgs", { slug: "devorg", name: "Dev org" });
    expect(created.status).toBe(201);
    const provisioned = await waitFor("the tenant provision to end", async () => {
      const { body } = await first.admin("GET", "/cp/orgs/devorg");
      return body.operation?.status === "pending" || body.operation?.status === "running" ? undefined : body;
    });
    expect(provisioned.operation).toMatchObject({ kind: "provision_tenant", status: "succeeded" });
    expect(provisioned.org.tenant_url).toBe("http://127.0.0.1:1/devorg");
    const files = Object.values(SECRET_FILES).map((file) => read(dataDir, file));
    expect((await first.kill()).code).toBe(0);

    const second = await startControlPlaneProcess({ env, dataDir });
    expect(second.adminToken).toBe(token);
    expect(second.output()).toMatch(/Admin token: mca_/);
    expect(second.output()).not.toContain("generated now");
    expect(second.output()).not.toContain("Generated for development");
    // the persisted master secret still signs for the org created before the restart
    const client = new ControlPlaneClient({
      baseUrl: second.url,
      tenantToken: created.body.tenant_credential,
      signingKey: deriveTenantSigningKey(
        read(dataDir, SECRET_FILES.provisionSharedSecret),
        created.body.org.id,
      ),
      maxAttempts: 1,
    });
    const config = await client.call<{ org_id: string }>({
      op: "config",
      method: "GET",
      path: "/cp/tenants/config",
    });
    expect(config.body.org_id).toBe(created.body.org.id);
    expect(Object.values(SECRET_FILES).map((file) => read(dataDir, file))).toEqual(files);
    await second.kill();
  });

  it("refuses to start in production without them, naming the first missing one, and writes nothing", async () => {
    const dataDir = join(folder(), "data");
    const spawned = spawnPlatform(
      {
        MOLECULE_ENV: "production",
        MOLECULE_DATA_DIR: dataDir,
        CP_ADMIN_API_TOKEN: "production-admin-token-0123456789",
        PORT: "0",
        HOST: "127.0.0.1",
      },
      CONTROL_PLANE_MAIN,
    );
    const exit = await spawned.waitForExit(60_000);
    expect(exit.code).toBe(1);
    expect(spawned.output().trim()).toBe(
      "molecule control plane: PROVISION_SHARED_SECRET is required when MOLECULE_ENV=production",
    );
    expect(existsSync(dataDir)).toBe(false);
  });
});

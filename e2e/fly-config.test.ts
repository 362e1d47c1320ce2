/**
 * infra/fly.toml (the tenant platform on Fly, flyio mode) and infra/fly.control-plane.toml (the control plane on Fly):
 * read with Python's tomllib, their [env] plus the secrets their headers tell operators to set must be a configuration
 * each service's own loader accepts, with the ports, volume and image the files name; and each stops start-up when
 * one of those secrets is missing. No secret value sits in either file.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { loadConfig as loadControlPlaneConfig } from "../apps/control-plane/src/config.ts";
import { loadConfig as loadTenantConfig } from "../apps/tenant-platform/src/config.ts";
import { REPO_ROOT } from "../test-support/process.ts";

const run = promisify(execFile);

interface FlyToml {
  app: string;
  build: { image?: string; dockerfile?: string };
  env: Record<string, string>;
  mounts?: { source: string; destination: string }[];
  http_service: { internal_port: number; checks: { path: string }[]; auto_stop_machines: string };
}

async function readToml(file: string): Promise<FlyToml> {
  const { stdout } = await run("python3", [
    "-c",
    "import json, sys, tomllib; print(json.dumps(tomllib.load(open(sys.argv[1], 'rb'))))",
    join(REPO_ROOT, file),
  ]);
  return JSON.parse(stdout) as FlyToml;
}

const SECRET_NAMES = /TOKEN|SECRET|KEY$|PASSWORD|DATABASE_URL/;

function withoutEach(secrets: Record<string, string>): [string, Record<string, string>][] {
  return Object.keys(secrets).map((missing) => [
    missing,
    Object.fromEntries(Object.entries(secrets).filter(([key]) => key !== missing)),
  ]);
}

describe("infra/fly.toml: the tenant platform on Fly Machines", () => {
  const secrets = {
    ADMIN_TOKEN: "adm_fly_0123456789abcdef",
    SECRETS_ENCRYPTION_KEY: "ab".repeat(32),
    FLY_API_TOKEN: "FlyV1 fm2_test",
  };

  it("is a flyio-mode configuration the tenant's loader accepts, serving where the file says", async () => {
    const fly = await readToml("infra/fly.toml");
    expect(Object.keys(fly.env).filter((key) => SECRET_NAMES.test(key))).toEqual([]);
    expect(fly.build.image).toBe("molecule/tenant-platform:latest");
    const config = loadTenantConfig({ ...fly.env, ...secrets });
    expect(config.backend.selection).toMatchObject({
      backend: "flyio",
      flyWorkspaceApp: fly.env.FLY_WORKSPACE_APP,
    });
    expect(config.http.port).toBe(fly.http_service.internal_port);
    // 6PN is IPv6: workspaces reach the platform at <app>.internal.
    expect(config.http.host).toBe("::");
    expect(config.http.publicUrl).toBe(`http://${fly.app}.internal:${fly.http_service.internal_port}`);
    expect(fly.mounts?.[0]?.destination).toBe(fly.env.MOLECULE_DATA_DIR);
    expect(fly.http_service.checks.map((check) => check.path)).toEqual(["/health"]);
    expect(fly.http_service.auto_stop_machines).toBe("off");
  });

  it("stops start-up without each secret it documents", async () => {
    const fly = await readToml("infra/fly.toml");
    for (const [missing, rest] of withoutEach(secrets)) {
      expect(() => loadTenantConfig({ ...fly.env, ...rest }), missing).toThrow(missing);
    }
  });
});

describe("infra/fly.control-plane.toml: the control plane on Fly", () => {
  const secrets = {
    CP_ADMIN_API_TOKEN: "cpa_fly_0123456789abcdef",
    PROVISION_SHARED_SECRET: "s".repeat(64),
    CP_SECRETS_ENCRYPTION_KEY: "cd".repeat(32),
    FLY_API_TOKEN: "FlyV1 fm2_test",
  };

  it("runs Fly workspaces and operator-run tenants, built from a Dockerfile in infra/", async () => {
    const fly = await readToml("infra/fly.control-plane.toml");
    expect(Object.keys(fly.env).filter((key) => SECRET_NAMES.test(key))).toEqual([]);
    expect(existsSync(join(REPO_ROOT, "infra", fly.build.dockerfile ?? "(none)"))).toBe(true);
    const config = loadControlPlaneConfig({
      ...fly.env,
      ...secrets,
      DATABASE_URL: "postgres://cp@db.internal/cp",
    });
    expect(config.workspaceBackend).toMatchObject({ name: "flyio", flyApp: fly.env.FLY_WORKSPACE_APP });
    expect(config.tenantBackend).toMatchObject({
      name: "external",
      urlTemplate: fly.env.TENANT_URL_TEMPLATE,
    });
    expect(config.http.port).toBe(fly.http_service.internal_port);
    expect(config.http.publicUrl).toBe(`http://${fly.app}.internal:${fly.http_service.internal_port}`);
  });

  it("stops start-up without each secret it documents", async () => {
    const fly = await readToml("infra/fly.control-plane.toml");
    for (const [missing, rest] of withoutEach(secrets)) {
      expect(() => loadControlPlaneConfig({ ...fly.env, ...rest }), missing).toThrow(missing);
    }
  });
});

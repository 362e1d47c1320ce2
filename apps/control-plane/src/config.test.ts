import { describe, expect, it } from "vitest";
import { loadConfig } from "./config.ts";

const base = {
  PROVISION_SHARED_SECRET: "s".repeat(32),
  CP_SECRETS_ENCRYPTION_KEY: "a".repeat(64),
};

const production = { ...base, MOLECULE_ENV: "production", CP_ADMIN_API_TOKEN: "t".repeat(16) };

describe("control plane config", () => {
  it("has defaults: port 8090, docker backends, admin API off without a token", () => {
    const config = loadConfig(base);
    expect(config.http.port).toBe(8090);
    expect(config.workspaceBackend.name).toBe("docker");
    expect(config.tenantBackend).toEqual({
      name: "docker",
      image: "molecule/tenant-platform:latest",
      network: "molecule",
      urlTemplate: null,
    });
    expect(config.auth.adminToken).toBeNull();
    expect(config.http.publicUrl).toBe("http://host.docker.internal:8090");
    expect(loadConfig({ ...base, TENANT_NETWORK: "host" }).http.publicUrl).toBe("http://127.0.0.1:8090");
    expect(loadConfig({ ...base, CP_PUBLIC_URL: "https://cp.example.com" }).http.publicUrl).toBe(
      "https://cp.example.com",
    );
  });

  it("stops with one line naming the variable", () => {
    const cases: [Record<string, string>, string][] = [
      [{ ...base, PROVISION_SHARED_SECRET: "short" }, "PROVISION_SHARED_SECRET must be at least 32"],
      [{ ...base, CP_SECRETS_ENCRYPTION_KEY: "not-a-key" }, "CP_SECRETS_ENCRYPTION_KEY must be 32 bytes"],
      [{ ...base, CP_ADMIN_API_TOKEN: "short" }, "CP_ADMIN_API_TOKEN must be at least 16"],
      [
        { ...base, MOLECULE_ENV: "production" },
        "CP_ADMIN_API_TOKEN is required when MOLECULE_ENV=production",
      ],
      [
        { ...production, PROVISION_SHARED_SECRET: "" },
        "PROVISION_SHARED_SECRET is required when MOLECULE_ENV=production",
      ],
      [
        { ...production, CP_SECRETS_ENCRYPTION_KEY: "" },
        "CP_SECRETS_ENCRYPTION_KEY is required when MOLECULE_ENV=production",
      ],
      [{ ...base, CP_TENANT_BACKEND: "external" }, "TENANT_URL_TEMPLATE is required"],
      [
        { ...base, CP_TENANT_BACKEND: "external", TENANT_URL_TEMPLATE: "not a url" },
        "TENANT_URL_TEMPLATE must be a URL",
      ],
      [{ ...base, CP_TENANT_BACKEND: "kubernetes" }, "CP_TENANT_BACKEND"],
      [{ ...base, CP_WORKSPACE_BACKEND: "flyio" }, "FLY_API_TOKEN is required"],
      [{ ...base, CP_WORKSPACE_BACKEND: "flyio", FLY_API_TOKEN: "t" }, "FLY_WORKSPACE_APP is required"],
      [{ ...base, CP_WORKSPACE_BACKEND: "ec2" }, "CP_WORKSPACE_BACKEND"],
      [{ ...base, TENANT_NETWORK: "overlay" }, "TENANT_NETWORK"],
    ];
    for (const [env, message] of cases) {
      expect(() => loadConfig(env), message).toThrow(message);
    }
  });

  it("accepts the cloud guides' MOLECULE_ENV names too; prod is as strict as production", () => {
    expect(() => loadConfig({ ...base, MOLECULE_ENV: "prod" })).toThrow(
      "CP_ADMIN_API_TOKEN is required when MOLECULE_ENV=prod",
    );
    expect(loadConfig({ ...production, MOLECULE_ENV: "prod" }).environment).toBe("prod");
    for (const name of ["dev", "staging", "test"]) {
      const config = loadConfig({ MOLECULE_ENV: name });
      expect(config.environment).toBe(name);
      expect(config.auth.adminToken).toBeNull();
    }
  });

  it("leaves the secrets unset in development without them (generated at start-up, see bootstrap.ts)", () => {
    const config = loadConfig({});
    expect(config.environment).toBe("development");
    expect(config.auth).toEqual({ adminToken: null, provisionSharedSecret: null });
    expect(config.secrets.key).toBeNull();
  });

  it("takes an external tenant backend with its URL template", () => {
    const config = loadConfig({
      ...base,
      CP_TENANT_BACKEND: "external",
      TENANT_URL_TEMPLATE: "https://{slug}.tenants.example.com",
    });
    expect(config.tenantBackend).toMatchObject({
      name: "external",
      urlTemplate: "https://{slug}.tenants.example.com",
    });
  });

  it("accepts a production configuration", () => {
    const config = loadConfig({
      ...base,
      MOLECULE_ENV: "production",
      CP_ADMIN_API_TOKEN: "t".repeat(16),
      CP_WORKSPACE_BACKEND: "flyio",
      FLY_API_TOKEN: "fly",
      FLY_WORKSPACE_APP: "ws-app",
    });
    expect(config.workspaceBackend).toMatchObject({ name: "flyio", flyApp: "ws-app", flyRegion: "ord" });
  });
});

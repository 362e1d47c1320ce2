/**
 * infra/compose.yaml as a self-hoster's compose implementation reads it: `docker compose config` (the plugin) or
 * Debian's docker-compose 1.29 (the gate installs it), which validates the file against the compose schema and prints
 * it resolved. The published images' names, the wiring between the services, the hardening and the refusal to start
 * without the secrets are checked on that output.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../test-support/process.ts";

const run = promisify(execFile);
const COMPOSE_FILE = join(REPO_ROOT, "infra/compose.yaml");
const SECRETS = {
  ADMIN_TOKEN: "adm_compose_test_0123456789",
  SECRETS_ENCRYPTION_KEY: "ab".repeat(32),
  POSTGRES_PASSWORD: "pg-compose-test-pw",
};

let compose: string[];

/** `docker compose` when the plugin is there, else `docker-compose`; the gate installs the latter. */
async function findCompose(): Promise<string[]> {
  try {
    await run("docker", ["compose", "version"]);
    return ["docker", "compose"];
  } catch {
    await run("docker-compose", ["version"]);
    return ["docker-compose"];
  }
}

async function config(env: Record<string, string>): Promise<string> {
  const [command, ...args] = compose;
  const { stdout } = await run(command as string, [...args, "-p", "molecule", "-f", COMPOSE_FILE, "config"], {
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
  });
  return stdout;
}

/** The lines of one top-level service in the resolved file, up to the next service. */
function service(resolved: string, name: string): string {
  const match = new RegExp(`\\n  ${name}:\\n((?:    .*\\n|\\s*\\n)+)`).exec(resolved);
  if (!match) throw new Error(`service ${name} not in:\n${resolved}`);
  return match[1] as string;
}

beforeAll(async () => {
  compose = await findCompose();
});

describe("infra/compose.yaml", () => {
  it("is valid and runs the published tenant platform image on PostgreSQL, hardened, with the secrets given", async () => {
    const resolved = await config(SECRETS);
    const tenant = service(resolved, "tenant-platform");
    const postgres = service(resolved, "postgres");
    expect(tenant).toContain("image: molecule/tenant-platform:latest");
    expect(postgres).toMatch(/image: postgres:15\n/);
    expect(tenant).toContain(
      `DATABASE_URL: postgres://molecule:${SECRETS.POSTGRES_PASSWORD}@postgres:5432/molecule`,
    );
    expect(tenant).toContain(`ADMIN_TOKEN: ${SECRETS.ADMIN_TOKEN}`);
    expect(tenant).toContain(`SECRETS_ENCRYPTION_KEY: ${SECRETS.SECRETS_ENCRYPTION_KEY}`);
    expect(tenant).toContain("MOLECULE_ENV: production");
    expect(tenant).toMatch(/depends_on:\n\s+postgres:\n\s+condition: service_healthy/);
    // Workspaces join the network by name and reach the platform there.
    expect(tenant).toContain("WORKSPACE_NETWORK: molecule");
    expect(tenant).toContain("PLATFORM_URL: http://tenant-platform:8080");
    expect(resolved).toMatch(/networks:\n(?:.*\n)*?\s+molecule:\n\s+name: molecule/);
    expect(tenant).toMatch(/ports:\n\s+- 127\.0\.0\.1:8080:8080/);
    expect(tenant).toMatch(/cap_drop:\n\s+- ALL/);
    expect(tenant).toContain("read_only: true");
    expect(tenant).toContain("no-new-privileges:true");
    expect(tenant).toContain("tenant-data:/data");
  });

  it("takes other images, port and bind address from the environment", async () => {
    const resolved = await config({
      ...SECRETS,
      TENANT_IMAGE: "ghcr.io/acme/tenant-platform:1.2.3",
      POSTGRES_IMAGE: "postgres:15.8",
      MOLECULE_PORT: "9090",
      MOLECULE_BIND: "0.0.0.0",
    });
    expect(service(resolved, "tenant-platform")).toContain("image: ghcr.io/acme/tenant-platform:1.2.3");
    expect(service(resolved, "tenant-platform")).toMatch(/- 0\.0\.0\.0:9090:8080/);
    expect(service(resolved, "postgres")).toContain("image: postgres:15.8");
  });

  it("refuses to run without each secret, naming it", async () => {
    for (const missing of Object.keys(SECRETS)) {
      const env = Object.fromEntries(Object.entries(SECRETS).filter(([key]) => key !== missing));
      await expect(config(env)).rejects.toMatchObject({ stderr: expect.stringContaining(`set ${missing}`) });
    }
  });
});

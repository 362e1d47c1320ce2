import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Dockerode from "dockerode";
import { afterAll, describe, expect, it } from "vitest";
import {
  killAllPlatformProcesses,
  type PlatformProcess,
  spawnPlatform,
  startPlatformProcess,
  uniqueDeployment,
} from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const docker = new Dockerode();
const deployment = uniqueDeployment();
const dataDir = mkdtempSync(join(tmpdir(), "molecule-pglite-"));

/** What a first-time user runs: no database, no admin token, no secrets key; everything kept in the data dir. */
const zeroConfig = { DATABASE_URL: undefined, ADMIN_TOKEN: undefined, SECRETS_ENCRYPTION_KEY: undefined };

afterAll(async () => {
  await killAllPlatformProcesses();
  const filters = JSON.stringify({ label: [`molecule.deployment=${deployment}`] });
  for (const container of await docker.listContainers({ all: true, filters })) {
    await docker.getContainer(container.Id).remove({ force: true });
  }
  for (const volume of (await docker.listVolumes({ filters })).Volumes ?? []) {
    await docker.getVolume(volume.Name).remove({ force: true });
  }
  rmSync(dataDir, { recursive: true, force: true });
});

async function statusBecomes(platform: PlatformProcess, id: string, status: string) {
  let last: unknown;
  try {
    return await waitFor(
      `workspace ${id} to be ${status}`,
      async () => {
        const { body } = await platform.call("GET", `/workspaces/${id}`);
        last = body;
        return body.status === status ? body : undefined;
      },
      90_000,
    );
  } catch (error) {
    throw new Error(
      `${(error as Error).message}\nlast seen: ${JSON.stringify(last)}\nplatform output:\n${platform.output()}`,
    );
  }
}

describe("the main command on PGlite, zero configuration", () => {
  it("starts, prints URL and generated token, runs a workspace end to end, and keeps its data across a restart", async () => {
    const first = await startPlatformProcess({
      dataDir,
      env: { ...zeroConfig, MOLECULE_DEPLOYMENT: deployment },
    });
    expect(first.output()).toContain(`Molecule tenant platform listening on ${first.url}`);
    expect(first.output()).toContain("database: pglite");
    expect(first.output()).toMatch(/Admin token \(generated now\): mat_\S+/);
    expect(first.adminToken).toMatch(/^mat_/);
    expect(readFileSync(join(dataDir, "admin-token"), "utf8").trim()).toBe(first.adminToken);
    expect(existsSync(join(dataDir, "pglite"))).toBe(true);
    expect(existsSync(join(dataDir, "secrets-key"))).toBe(true);

    expect((await first.call("GET", "/workspaces")).status).toBe(200);
    const unauthorized = await fetch(`${first.url}/workspaces`, {
      headers: { authorization: "Bearer nope" },
    });
    expect(unauthorized.status).toBe(401);

    const created = await first.call("POST", "/workspaces", { name: "smoke", runtime: "echo", tier: 2 });
    expect(created.status).toBe(202);
    const id: string = created.body.workspace.id;
    await statusBecomes(first, id, "online");

    const secret = await first.call("PUT", `/workspaces/${id}/secrets/SMOKE_SECRET`, {
      value: "smoke-value",
    });
    expect(secret.status).toBe(200);
    const keys = await first.call("GET", `/workspaces/${id}/secrets`);
    expect(JSON.stringify(keys.body)).toContain("SMOKE_SECRET");
    expect(JSON.stringify(keys.body)).not.toContain("smoke-value");

    expect((await first.call("DELETE", `/workspaces/${id}`)).status).toBe(202);
    await statusBecomes(first, id, "removed");
    const filters = JSON.stringify({ label: [`molecule.workspace_id=${id}`] });
    expect(await docker.listContainers({ all: true, filters })).toEqual([]);
    expect((await docker.listVolumes({ filters })).Volumes ?? []).toEqual([]);
    expect(first.output()).not.toContain("smoke-value");

    const exit = await first.kill("SIGTERM");
    expect(exit.code).toBe(0);

    // Same data dir, still no configuration: the kept token works and the PGlite data is still there.
    const second = await startPlatformProcess({
      dataDir,
      env: { ...zeroConfig, MOLECULE_DEPLOYMENT: deployment },
    });
    expect(second.adminToken).toBe(first.adminToken);
    expect(second.output()).not.toContain("(generated now)");
    const again = await second.call("GET", `/workspaces/${id}`);
    expect(again.status).toBe(200);
    expect(again.body.status).toBe("removed");
    expect((await second.kill("SIGTERM")).code).toBe(0);
  }, 240_000);

  it("MOLECULE_ENV=production without ADMIN_TOKEN exits non-zero with one line naming ADMIN_TOKEN", async () => {
    const scratch = mkdtempSync(join(tmpdir(), "molecule-prod-"));
    try {
      const spawned = spawnPlatform({
        MOLECULE_ENV: "production",
        MOLECULE_DATA_DIR: scratch,
        HOST: "127.0.0.1",
        PORT: "0",
        MOLECULE_DEPLOYMENT: deployment,
      });
      const exit = await spawned.waitForExit(30_000);
      expect(exit.code).not.toBe(0);
      expect(exit.code).not.toBeNull();
      const lines = spawned.output().trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain("ADMIN_TOKEN");
      // Nothing was created before refusing: no token file, no database.
      expect(existsSync(join(scratch, "admin-token"))).toBe(false);
      expect(existsSync(join(scratch, "pglite"))).toBe(false);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  }, 60_000);
});

import { randomBytes } from "node:crypto";
import { workspaceSecrets, workspaceTokens } from "@molecule/db";
import { resourceName } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createDockerTestPlatform,
  removeDeployment,
  statusBecomes as statusBecomesOf,
} from "../test-support/docker-platform.ts";
import type { TestPlatform } from "../test-support/platform.ts";

const docker = new Dockerode();
const deployment = `e2e-${randomBytes(4).toString("hex")}`;
let platform: TestPlatform;

beforeAll(async () => {
  platform = await createDockerTestPlatform({ docker, deployment });
  await platform.listen();
});

afterAll(async () => {
  await platform.close();
  await removeDeployment(docker, deployment);
});

const statusBecomes = (id: string, status: string) => statusBecomesOf(platform, docker, id, status);

async function authTokenHashes(id: string) {
  const rows = await platform.database.db
    .select()
    .from(workspaceTokens)
    .where(eq(workspaceTokens.workspaceId, id));
  return rows.filter((row) => row.kind === "auth").map((row) => row.tokenHash);
}

describe("a workspace on the real Docker engine, end to end", () => {
  it("create → running with env, limits, labels → agent registers → online → stop → start → delete", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "e2e", runtime: "echo", tier: 2, secrets: { E2E_SECRET: "e2e-secret-value" } },
    });
    expect(created.status).toBe(202);
    const id: string = created.body.workspace.id;
    const online = await statusBecomes(id, "online");
    expect(online.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+/);

    const container = await docker.getContainer(resourceName(id)).inspect();
    const env = new Map(
      container.Config.Env.map((entry) => entry.split(/=(.*)/s).slice(0, 2) as [string, string]),
    );
    expect(env.get("WORKSPACE_ID")).toBe(id);
    expect(env.get("PLATFORM_URL")).toBe(platform.deps.settings.publicUrl);
    expect(env.get("WORKSPACE_BOOT_TOKEN")).toMatch(/^mbt_/);
    expect(env.get("E2E_SECRET")).toBe("e2e-secret-value");
    expect(container.HostConfig.Memory).toBe(512 * 1024 * 1024);
    expect(container.HostConfig.NanoCpus).toBe(1_000_000_000);
    expect(container.HostConfig.Privileged).toBe(false);
    expect(container.HostConfig.PidMode ?? "").not.toBe("host");
    expect(JSON.stringify(container.HostConfig.Binds ?? [])).not.toContain("docker.sock");
    expect(JSON.stringify(container.Mounts)).not.toContain("docker.sock");
    expect(container.Config.Labels).toMatchObject({
      "molecule.workspace_id": id,
      "molecule.org_id": "org_test",
      "molecule.deployment": deployment,
    });
    expect(JSON.stringify(container.Config.Labels)).not.toContain("e2e-secret-value");

    // The agent inside answers A2A at the URL it registered.
    const reply = await fetch(online.url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "message/send",
        params: { message: { role: "user", messageId: "m1", parts: [{ kind: "text", text: "hi" }] } },
      }),
    });
    expect(JSON.stringify(await reply.json())).toContain("echo: hi");

    const tokensBefore = await authTokenHashes(id);
    expect(tokensBefore).toHaveLength(1);

    expect((await platform.call("POST", `/workspaces/${id}/stop`)).status).toBe(202);
    await statusBecomes(id, "stopped");
    expect((await docker.getContainer(resourceName(id)).inspect()).State.Running).toBe(false);

    expect((await platform.call("POST", `/workspaces/${id}/start`)).status).toBe(202);
    await statusBecomes(id, "online");
    // The agent found its bearer token on the workspace volume: the volume's data survived stop/start.
    expect(await authTokenHashes(id)).toEqual(tokensBefore);

    // A secret change marks the workspace; a restart rebuilds the container with it, keeping the volume.
    const put = await platform.call("PUT", `/workspaces/${id}/secrets/E2E_SECRET`, {
      body: { value: "rotated" },
    });
    expect(put.body.needsRestart).toBe(true);
    expect((await platform.call("POST", `/workspaces/${id}/restart`)).status).toBe(202);
    const restarted = await statusBecomes(id, "online");
    expect(restarted.needsRestart).toBe(false);
    const rebuilt = await docker.getContainer(resourceName(id)).inspect();
    expect(rebuilt.Id).not.toBe(container.Id);
    expect(rebuilt.Config.Env).toContain("E2E_SECRET=rotated");
    expect(await authTokenHashes(id)).toEqual(tokensBefore);

    expect((await platform.call("DELETE", `/workspaces/${id}`)).status).toBe(202);
    await statusBecomes(id, "removed");
    await expect(docker.getContainer(resourceName(id)).inspect()).rejects.toMatchObject({ statusCode: 404 });
    await expect(docker.getVolume(resourceName(id)).inspect()).rejects.toMatchObject({ statusCode: 404 });
    expect(await authTokenHashes(id)).toEqual([]);
    const secrets = await platform.database.db
      .select()
      .from(workspaceSecrets)
      .where(eq(workspaceSecrets.workspaceId, id));
    expect(secrets).toEqual([]);
  }, 180_000);

  it("a container that dies is noticed by the status sweep", async () => {
    const created = await platform.call("POST", "/workspaces", { body: { name: "dies", runtime: "echo" } });
    const id: string = created.body.workspace.id;
    await statusBecomes(id, "online");
    await docker.getContainer(resourceName(id)).kill({ signal: "SIGKILL" });
    const offline = await statusBecomes(id, "offline");
    expect(offline.statusReason).toMatch(/exited/);
    await platform.call("DELETE", `/workspaces/${id}`);
    await statusBecomes(id, "removed");
  }, 120_000);

  it("an image that cannot be pulled fails the operation with a clear reason", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "noimg", runtime: "doesnotexist" },
    });
    const id: string = created.body.workspace.id;
    const failed = await statusBecomes(id, "failed");
    expect(failed.statusReason).toContain("molecule/workspace-doesnotexist:latest");
    const operation = await platform.call("GET", `/operations/${created.body.operation.id}`);
    expect(operation.body.error.code).toBe("image_unavailable");
    await expect(docker.getContainer(resourceName(id)).inspect()).rejects.toMatchObject({ statusCode: 404 });
  }, 180_000);
});

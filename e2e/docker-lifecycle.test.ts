import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { networkInterfaces } from "node:os";
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

/** The IPv4 addresses sockets listening on `port` are bound to, from the kernel's table (this network namespace). */
function listeningAddresses(port: number): string[] {
  const LISTEN = "0A";
  return readFileSync("/proc/net/tcp", "utf8")
    .split("\n")
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields[3] === LISTEN && Number.parseInt(fields[1]?.split(":")[1] ?? "", 16) === port)
    .map((fields) => {
      const hex = fields[1]?.split(":")[0] ?? "";
      // Little-endian: 0100007F is 127.0.0.1.
      return [6, 4, 2, 0].map((at) => Number.parseInt(hex.slice(at, at + 2), 16)).join(".");
    });
}

/** This machine's IPv4 addresses other than loopback (there may be none). */
function otherLocalAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((addresses) => addresses ?? [])
    .filter((address) => address.family === "IPv4" && !address.internal)
    .map((address) => address.address);
}

/** Whether a TCP connection to `host:port` is accepted. */
function connects(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: 5_000 });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(false));
  });
}

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
    expect(env.get("AGENT_HOST")).toBe("127.0.0.1");
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

    // On the host's network the agent listens on loopback only: the kernel shows the socket bound to 127.0.0.1,
    // and no other address of this machine answers on its port.
    const port = Number(new URL(online.url).port);
    expect(listeningAddresses(port)).toEqual(["127.0.0.1"]);
    for (const address of otherLocalAddresses()) {
      expect(await connects(address, port), `${address}:${port}`).toBe(false);
    }

    // Called directly, even on loopback, the agent refuses: it answers only with the inbound token the platform
    // holds for it. Through the platform's A2A proxy, it answers.
    const message = {
      jsonrpc: "2.0",
      id: 1,
      method: "message/send",
      params: { message: { role: "user", messageId: "m1", parts: [{ kind: "text", text: "hi" }] } },
    };
    const direct = await fetch(online.url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(message),
    });
    expect(direct.status).toBe(401);
    const reply = await platform.call("POST", `/workspaces/${id}/a2a`, { body: message });
    expect(reply.status).toBe(200);
    expect(JSON.stringify(reply.body)).toContain("echo: hi");

    const tokensBefore = await authTokenHashes(id);
    expect(tokensBefore).toHaveLength(1);

    expect((await platform.call("POST", `/workspaces/${id}/stop`)).status).toBe(202);
    await statusBecomes(id, "stopped");
    expect((await docker.getContainer(resourceName(id)).inspect()).State.Running).toBe(false);

    expect((await platform.call("POST", `/workspaces/${id}/start`)).status).toBe(202);
    await statusBecomes(id, "online");
    // The agent found its bearer token on the workspace volume: the volume's data survived stop/start.
    expect(await authTokenHashes(id)).toEqual(tokensBefore);
    // And its inbound token beside it: the platform's proxy is still the one it answers.
    const again = await platform.call("POST", `/workspaces/${id}/a2a`, { body: message });
    expect(JSON.stringify(again.body)).toContain("echo: hi");

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
    expect(failed.statusReason).toContain("molecule/workspace-doesnotexist:");
    const operation = await platform.call("GET", `/operations/${created.body.operation.id}`);
    expect(operation.body.error.code).toBe("image_unavailable");
    await expect(docker.getContainer(resourceName(id)).inspect()).rejects.toMatchObject({ statusCode: 404 });
  }, 180_000);
});

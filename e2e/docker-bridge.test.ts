/**
 * A standalone tenant platform on the host with its workspaces on a user-defined Docker network: workspaces reach
 * the platform through host.docker.internal (the platform listens on 0.0.0.0), the backend tells each agent its
 * address on the network (http://ws-<id>:8000) and keeps it in the handle, and the platform reaches it there, resolving
 * container names through the engine. A container name is accepted only as the workspace's own assigned address.
 */
import { randomBytes } from "node:crypto";
import { type ServerType, serve } from "@hono/node-server";
import { workspaces } from "@molecule/db";
import { createContainerResolver, LABELS, resourceName } from "@molecule/provisioner-core";
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
const suffix = randomBytes(4).toString("hex");
const deployment = `e2e-bridge-${suffix}`;
const network = `molecule-e2e-${suffix}`;
let platform: TestPlatform;
let server: ServerType;

beforeAll(async () => {
  platform = await createDockerTestPlatform({
    docker,
    deployment,
    network,
    workspaceEnv: { HEARTBEAT_INTERVAL_MS: "1000" },
    resolveAgentHost: createContainerResolver(network, { docker }),
  });
  // On all interfaces, so containers reach it through the host gateway.
  const port = await new Promise<number>((resolve) => {
    server = serve({ fetch: platform.app.fetch, port: 0, hostname: "0.0.0.0" }, (info) => resolve(info.port));
  });
  platform.deps.settings.publicUrl = `http://host.docker.internal:${port}`;
  platform.runner.start();
  platform.sweeper.start();
});

afterAll(async () => {
  if (server) {
    const closed = new Promise((resolve) => server.close(resolve));
    if ("closeAllConnections" in server) server.closeAllConnections();
    await closed;
  }
  await platform?.close();
  await removeDeployment(docker, deployment);
  await docker
    .getNetwork(network)
    .remove()
    .catch(() => {});
});

const statusBecomes = (id: string, status: string) => statusBecomesOf(platform, docker, id, status);

const send = (text: string) => ({
  jsonrpc: "2.0",
  id: 1,
  method: "message/send",
  params: { message: { role: "user", messageId: "m1", parts: [{ kind: "text", text }] } },
});

describe("workspaces on a user-defined Docker network, platform on the host", () => {
  let managedId: string;

  it("a workspace comes online at its container name and answers A2A through the platform", async () => {
    const created = await platform.call("POST", "/workspaces", { body: { name: "bridge", runtime: "echo" } });
    expect(created.status).toBe(202);
    managedId = created.body.workspace.id;
    const online = await statusBecomes(managedId, "online");
    expect(online.url).toBe(`http://${resourceName(managedId)}:8000`);
    // What the agent registered is exactly the address the backend assigned and keeps in the handle.
    const [row] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, managedId));
    expect(row?.handle?.agentUrl).toBe(online.url);

    const info = await docker.getNetwork(network).inspect();
    expect(info.Labels).toMatchObject({ [LABELS.managed]: "true" });
    const container = await docker.getContainer(resourceName(managedId)).inspect();
    expect(Object.keys(container.NetworkSettings.Networks)).toEqual([network]);
    expect(container.Config.Env).toEqual(
      expect.arrayContaining([
        `AGENT_PUBLIC_URL=http://${resourceName(managedId)}:8000`,
        `PLATFORM_URL=${platform.deps.settings.publicUrl}`,
      ]),
    );

    const reply = await platform.call("POST", `/workspaces/${managedId}/a2a`, {
      body: send("over the bridge"),
    });
    expect(reply.status).toBe(200);
    expect(JSON.stringify(reply.body)).toContain("echo: over the bridge");

    // Every workspace on the network can reach the agent's port, so the network is no boundary: the agent itself
    // refuses a call that does not come through the platform (here, straight to its address on the network).
    const address = container.NetworkSettings.Networks[network]?.IPAddress;
    expect(address).toBeTruthy();
    const direct = await fetch(`http://${address}:8000/`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(send("around the platform")),
    });
    expect(direct.status).toBe(401);
    const card = await fetch(`http://${address}:8000/.well-known/agent-card.json`);
    expect(card.status).toBe(200);
  });

  it("refuses a container-name URL that is not the workspace's own, and any for an external workspace", async () => {
    const other = await platform.call("POST", "/workspaces", { body: { name: "other", runtime: "echo" } });
    expect(other.status).toBe(202);
    const otherId: string = other.body.workspace.id;
    // Once its backend has assigned its own address (while provisioning, a refused URL is only "retry later")…
    await statusBecomes(otherId, "online");
    // …the managed workspace cannot claim another workspace's container.
    const stolen = await platform.call("POST", "/registry/register", {
      body: { id: otherId, url: `http://${resourceName(managedId)}:8000` },
    });
    expect(stolen.status).toBe(400);
    expect(stolen.body.error.code).toBe("bad_request");

    const external = await platform.call("POST", "/workspaces", {
      body: { name: "remote", runtime: "external" },
    });
    expect(external.status).toBe(202);
    const externalId: string = external.body.workspace.id;
    const refused = await platform.call("POST", "/registry/register", {
      token: external.body.connection.registration_token,
      body: { id: externalId, url: `http://${resourceName(externalId)}:8000` },
    });
    expect(refused.status).toBe(400);
    expect(refused.body.error.message).toMatch(/https/);
    await platform.call("DELETE", `/workspaces/${otherId}`);
  });
});

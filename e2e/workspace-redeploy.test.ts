/**
 * Workspace redeploys on the real Docker engine with the image the global setup built: a redeploy rebuilds the
 * workspace's container on the current image, keeps its volume (the agent's bearer token lives there, so the agent
 * keeps its identity without registering a new token), and its operation ends only once the agent is online again.
 */
import { randomBytes } from "node:crypto";
import { workspaceTokens } from "@molecule/db";
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
import { waitFor } from "../test-support/wait.ts";

const docker = new Dockerode();
const deployment = `e2e-${randomBytes(4).toString("hex")}`;
let platform: TestPlatform;

beforeAll(async () => {
  platform = await createDockerTestPlatform({ docker, deployment });
  await platform.listen();
});

afterAll(async () => {
  await platform?.close();
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

/** When the engine made the workspace's volume: the same value after a rebuild means the same volume. */
async function volumeCreatedAt(id: string): Promise<string> {
  const volume = (await docker.getVolume(resourceName(id)).inspect()) as unknown as { CreatedAt: string };
  return volume.CreatedAt;
}

async function operationEnds(id: string) {
  return waitFor(`operation ${id} to end`, async () => {
    const operation = (await platform.call("GET", `/operations/${id}`)).body;
    return operation.status === "succeeded" || operation.status === "failed" ? operation : undefined;
  });
}

describe("POST /workspaces/:id/redeploy on the docker backend", () => {
  it("rebuilds the container on the current image, keeps the volume and the agent's token, ends online", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "redeploy", runtime: "echo" },
    });
    expect(created.status).toBe(202);
    const id: string = created.body.workspace.id;
    await statusBecomes(id, "online");
    const before = await docker.getContainer(resourceName(id)).inspect();
    const volumeBefore = await volumeCreatedAt(id);
    const tokensBefore = await authTokenHashes(id);
    expect(tokensBefore).toHaveLength(1);

    const accepted = await platform.call("POST", `/workspaces/${id}/redeploy`);
    expect(accepted.status).toBe(202);
    expect(accepted.body.operation.kind).toBe("redeploy");
    expect(accepted.body.workspace.status).toBe("stopping");
    const operation = await operationEnds(accepted.body.operation.id);
    expect(operation.status, JSON.stringify(operation.error)).toBe("succeeded");
    const steps: string[] = operation.steps.map((step: { name: string }) => step.name);
    expect(steps).toContain("container_removed");
    expect(steps).toContain("image");
    // The operation's last step is the agent back online, and the workspace says so as it ends.
    expect(steps.at(-1)).toBe("agent_online");
    expect((await platform.call("GET", `/workspaces/${id}`)).body.status).toBe("online");

    const after = await docker.getContainer(resourceName(id)).inspect();
    expect(after.Id).not.toBe(before.Id);
    expect(after.Config.Image).toBe(before.Config.Image);
    expect(after.State.Running).toBe(true);
    expect(await volumeCreatedAt(id)).toBe(volumeBefore);
    // The agent found its bearer token on the kept volume: no new registration token was spent on a new identity.
    expect(await authTokenHashes(id)).toEqual(tokensBefore);

    // A stopped workspace is not redeployed (start it instead): 409 with the envelope, nothing queued.
    expect((await platform.call("POST", `/workspaces/${id}/stop`)).status).toBe(202);
    await statusBecomes(id, "stopped");
    const refused = await platform.call("POST", `/workspaces/${id}/redeploy`);
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({ code: "invalid_transition" });
    expect(refused.body.error.requestId).toBeTruthy();

    await platform.call("DELETE", `/workspaces/${id}`);
    await statusBecomes(id, "removed");
  }, 180_000);
});

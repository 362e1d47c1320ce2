import { randomBytes } from "node:crypto";
import { createDockerProvisioner, LABELS } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { removeDeployment } from "../test-support/docker-platform.ts";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import { createTestPlatform, type TestPlatform } from "../test-support/platform.ts";
import { waitFor } from "../test-support/wait.ts";

const docker = new Dockerode();
const deployment = `e2e-pool-img-${randomBytes(4).toString("hex")}`;
const TAG = process.env.WORKSPACE_IMAGE_TAG ?? "latest";
// The same image under a second tag, as an upgrade to a new WORKSPACE_IMAGE_TAG would bring another.
const NEXT_TAG = `${TAG}-next-${randomBytes(3).toString("hex")}`;
let database: TestDatabase;

beforeAll(async () => {
  await docker
    .getImage(`molecule/workspace-echo:${TAG}`)
    .tag({ repo: "molecule/workspace-echo", tag: NEXT_TAG });
  database = await createTestDatabase();
});

afterAll(async () => {
  await removeDeployment(docker, deployment);
  await docker
    .getImage(`molecule/workspace-echo:${NEXT_TAG}`)
    .remove({ noprune: true })
    .catch(() => {});
  await database.drop();
});

/** A platform process on the shared database whose workspaces start on `tag` (a restart with another config). */
async function platformOn(tag: string): Promise<TestPlatform> {
  const image = { prefix: "molecule/workspace-", tag };
  const provisioner = createDockerProvisioner({
    docker,
    deployment,
    imagePrefix: image.prefix,
    imageTag: tag,
    network: "host",
  });
  const platform = await createTestPlatform(
    provisioner,
    { deployment, workspaceImage: image, workspaceEnv: { AGENT_PORT: "0", HEARTBEAT_INTERVAL_MS: "1000" } },
    { sweepIntervalMs: 1_000, database },
  );
  await platform.listen();
  return platform;
}

/** The deployment's pool containers, id → image. */
async function poolContainers(): Promise<Map<string, string>> {
  const containers = await docker.listContainers({
    all: true,
    filters: { label: [`${LABELS.deployment}=${deployment}`, `${LABELS.pool}=echo-t2`] },
  });
  return new Map(containers.map((c) => [c.Labels[LABELS.workspaceId] as string, c.Image]));
}

function readyIds(platform: TestPlatform, size: number) {
  return waitFor(
    `the pool to have ${size} ready members`,
    async () => {
      const { body } = await platform.call("GET", "/pools");
      const pool = body.pools[0];
      if (pool?.ready !== size || pool.starting !== 0) return undefined;
      const containers = await poolContainers();
      return containers.size === size ? containers : undefined;
    },
    120_000,
  );
}

describe("a warm pool across an image change", () => {
  it("members started on an image the platform no longer starts are destroyed and replaced on the new one", async () => {
    const before = await platformOn(TAG);
    expect((await before.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 2 } })).status).toBe(
      200,
    );
    const old = await readyIds(before, 2);
    expect([...old.values()]).toEqual([`molecule/workspace-echo:${TAG}`, `molecule/workspace-echo:${TAG}`]);
    await before.close();

    const after = await platformOn(NEXT_TAG);
    try {
      const replaced = await waitFor(
        "the old members to be replaced",
        async () => {
          const now = await readyIds(after, 2);
          return [...now.keys()].some((id) => old.has(id)) ? undefined : now;
        },
        120_000,
      );
      expect([...replaced.values()]).toEqual([
        `molecule/workspace-echo:${NEXT_TAG}`,
        `molecule/workspace-echo:${NEXT_TAG}`,
      ]);
      // The old members' volumes went with them.
      const volumes = await docker.listVolumes({
        filters: { label: [`${LABELS.deployment}=${deployment}`] },
      });
      const owners = (volumes.Volumes ?? []).map((volume) => volume.Labels?.[LABELS.workspaceId]).sort();
      expect(owners).toEqual([...replaced.keys()].sort());

      await after.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 0 } });
      await waitFor("the pool to be drained", async () =>
        (await poolContainers()).size === 0 ? true : undefined,
      );
    } finally {
      await after.close();
    }
  }, 300_000);

  it("two replicas on different tags side by side (a rolling upgrade) replace the pool once, then leave it be", async () => {
    // Started in this order: the second is the newest replica, and its image is the pool's.
    const old = await platformOn(TAG);
    const next = await platformOn(NEXT_TAG);
    try {
      // Their rounds are driven by hand here, so the test sees each one's report.
      await old.pools.stop();
      await next.pools.stop();
      await old.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 2 } });
      await old.pools.fill();
      await next.pools.fill();
      const settled = await readyIds(next, 2);
      expect([...settled.values()]).toEqual([
        `molecule/workspace-echo:${NEXT_TAG}`,
        `molecule/workspace-echo:${NEXT_TAG}`,
      ]);
      for (let round = 0; round < 3; round++) {
        expect(await old.pools.fill()).toEqual({ started: 0, failed: 0, removed: 0 });
        expect(await next.pools.fill()).toEqual({ started: 0, failed: 0, removed: 0 });
      }
      expect(await poolContainers()).toEqual(settled);

      await old.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 0 } });
      await old.pools.fill();
      await waitFor("the pool to be drained", async () =>
        (await poolContainers()).size === 0 ? true : undefined,
      );
    } finally {
      await next.close();
      await old.close();
    }
  }, 300_000);
});

import { randomBytes } from "node:crypto";
import { operations } from "@molecule/db";
import { resourceName } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import {
  freePort,
  killAllPlatformProcesses,
  type PlatformProcess,
  startPlatformProcess,
  uniqueDeployment,
} from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const docker = new Dockerode();
const deployment = uniqueDeployment();
let database: TestDatabase;
let env: Record<string, string>;

beforeAll(async () => {
  database = await createTestDatabase();
  // One identity for every process of this file: the same database, deployment, keys — and port, since a
  // container created before the crash keeps the PLATFORM_URL it was given.
  env = {
    DATABASE_URL: database.url,
    MOLECULE_DEPLOYMENT: deployment,
    PORT: String(await freePort()),
    ADMIN_TOKEN: `adm_${randomBytes(16).toString("hex")}`,
    SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
    OPERATION_LEASE_SECONDS: "2",
    STATUS_SWEEP_INTERVAL: "1",
  };
});

async function dockerCleanup(): Promise<void> {
  const filters = JSON.stringify({ label: [`molecule.deployment=${deployment}`] });
  for (const container of await docker.listContainers({ all: true, filters })) {
    await docker.getContainer(container.Id).remove({ force: true });
  }
  for (const volume of (await docker.listVolumes({ filters })).Volumes ?? []) {
    await docker.getVolume(volume.Name).remove({ force: true });
  }
}

afterAll(async () => {
  await killAllPlatformProcesses();
  await dockerCleanup();
  await database?.drop();
});

async function labelled(label: string) {
  const filters = JSON.stringify({ label: [label] });
  const containers = await docker.listContainers({ all: true, filters });
  const volumes = (await docker.listVolumes({ filters })).Volumes ?? [];
  return { containers, volumes };
}

async function exists(kind: "container" | "volume", name: string): Promise<boolean> {
  const target = kind === "container" ? docker.getContainer(name) : docker.getVolume(name);
  return target.inspect().then(
    () => true,
    (error: { statusCode?: number }) => {
      if (error.statusCode === 404) return false;
      throw error;
    },
  );
}

async function operationRow(id: string) {
  const [row] = await database.db.select().from(operations).where(eq(operations.id, id));
  if (!row) throw new Error(`operation ${id} not found`);
  return row;
}

/** Every container of the deployment belongs to a workspace that exists and is not removed. */
async function expectNoOrphans(platform: PlatformProcess) {
  const { containers } = await labelled(`molecule.deployment=${deployment}`);
  for (const container of containers) {
    const workspaceId = container.Labels["molecule.workspace_id"];
    expect(workspaceId, `container ${container.Names.join(",")} has no workspace label`).toBeTruthy();
    const row = await platform.call("GET", `/workspaces/${workspaceId}`);
    expect(row.status, `container ${container.Names.join(",")} has no workspace row`).toBe(200);
    expect(row.body.status).not.toBe("removed");
  }
}

async function waitWithOutput<T>(
  platform: PlatformProcess,
  what: string,
  probe: () => Promise<T | undefined>,
) {
  let last: unknown;
  try {
    return await waitFor(
      what,
      async () => {
        const value = await probe();
        last = value;
        return value;
      },
      90_000,
    );
  } catch (error) {
    throw new Error(
      `${(error as Error).message}\nlast: ${JSON.stringify(last)}\nplatform output:\n${platform.output()}`,
    );
  }
}

/**
 * Leaves the process frozen (SIGSTOP) at the first look that finds `reached` true, so the SIGKILL that follows lands
 * exactly there: each look freezes the process first and lets it go on (SIGCONT) when not there yet. Without the
 * freeze a busy machine can finish the provision between seeing the container and the kill.
 */
async function freezeOnceReached(platform: PlatformProcess, what: string, reached: () => Promise<boolean>) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    process.kill(platform.pid, "SIGSTOP");
    if (await reached()) return;
    process.kill(platform.pid, "SIGCONT");
    if (Date.now() > deadline) throw new Error(`never ${what}:\n${platform.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

type KillPoint = "after 202" | "claimed" | "volume exists" | "container exists";

/**
 * Creates a workspace, SIGKILLs the platform at `killAt`, starts a new process on the same database and
 * deployment, and checks it converges: one container, one volume, a workspace row for each, online.
 */
async function crashAndResume(killAt: KillPoint) {
  const first = await startPlatformProcess({ env });
  const created = await first.call("POST", "/workspaces", {
    name: `crash-${killAt.split(" ")[0]}`,
    runtime: "echo",
    tier: 2,
  });
  expect(created.status, JSON.stringify(created.body)).toBe(202);
  const id: string = created.body.workspace.id;
  const operationId: string = created.body.operation.id;
  const name = resourceName(id);

  if (killAt === "claimed") {
    // As soon as a runner holds the operation: usually before any docker resource exists.
    await freezeOnceReached(first, `operation ${operationId} claimed`, async () => {
      return (await operationRow(operationId)).attempts >= 1;
    });
  } else if (killAt !== "after 202") {
    const kind = killAt === "volume exists" ? "volume" : "container";
    await freezeOnceReached(first, `${kind} ${name} made`, () => exists(kind, name));
  }
  const exit = await first.kill("SIGKILL");
  expect(exit.signal).toBe("SIGKILL");

  const atKill = await operationRow(operationId);
  // The kill has to land mid-provision, or this round proves nothing.
  expect(atKill.status, `the operation had already finished when the kill landed (${killAt})`).toMatch(
    /^(pending|running)$/,
  );
  if (killAt !== "after 202") expect(atKill.attempts).toBeGreaterThanOrEqual(1);

  // Whatever the crash left, there is never a second container for the workspace.
  const left = await labelled(`molecule.workspace_id=${id}`);
  expect(left.containers.length).toBeLessThanOrEqual(1);
  expect(left.volumes.length).toBeLessThanOrEqual(1);

  const second = await startPlatformProcess({ env });
  try {
    const operation = await waitWithOutput(second, `operation ${operationId} to succeed`, async () => {
      const { body } = await second.call("GET", `/operations/${operationId}`);
      if (body.status === "failed") throw new Error(`operation failed: ${JSON.stringify(body)}`);
      return body.status === "succeeded" ? body : undefined;
    });
    expect(operation.attempts).toBeGreaterThanOrEqual(atKill.attempts + 1);
    if (atKill.attempts >= 1) expect(operation.attempts).toBeGreaterThanOrEqual(2);
    // Steps of every attempt are kept in order: the container was created at most once, then adopted.
    const steps: { name: string; detail?: string }[] = operation.steps;
    const creations = steps.filter((step) => step.name === "container_created");
    expect(creations.filter((step) => !step.detail?.startsWith("adopted")).length).toBeLessThanOrEqual(1);
    if (killAt === "container exists") expect(creations.at(-1)?.detail).toMatch(/^adopted /);
    console.log(
      `${killAt}: attempts at kill ${atKill.attempts} (${atKill.status}), final ${operation.attempts}, steps ${steps.map((step) => `${step.name}${step.detail?.startsWith("adopted") ? "(adopted)" : ""}`).join(" → ")}`,
    );

    const online = await waitWithOutput(second, `workspace ${id} to be online`, async () => {
      const { body } = await second.call("GET", `/workspaces/${id}`);
      return body.status === "online" ? body : undefined;
    });
    expect(online.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+/);

    const after = await labelled(`molecule.workspace_id=${id}`);
    expect(after.containers.map((container) => container.Names[0])).toEqual([`/${name}`]);
    expect(after.containers[0]?.State).toBe("running");
    expect(after.volumes.map((volume) => volume.Name)).toEqual([name]);
    await expectNoOrphans(second);

    expect((await second.call("DELETE", `/workspaces/${id}`)).status).toBe(202);
    await waitWithOutput(second, `workspace ${id} to be removed`, async () => {
      const { body } = await second.call("GET", `/workspaces/${id}`);
      return body.status === "removed" ? body : undefined;
    });
    const gone = await labelled(`molecule.deployment=${deployment}`);
    expect(gone.containers).toEqual([]);
    expect(gone.volumes).toEqual([]);
    expect((await second.kill("SIGTERM")).code).toBe(0);
  } catch (error) {
    throw new Error(
      `${(error as Error).message}\n--- killed process output ---\n${first.output()}\n--- resumed process output ---\n${second.output()}`,
    );
  }
}

describe("SIGKILL in the middle of provisioning, then a restart", () => {
  it("killed once the container exists: the next process adopts it, one container, online", async () => {
    await crashAndResume("container exists");
  }, 180_000);

  it("killed once the volume exists: the next process finishes the provision", async () => {
    await crashAndResume("volume exists");
  }, 180_000);

  it("killed as soon as the operation is claimed: the lease expires and the next process re-runs it", async () => {
    await crashAndResume("claimed");
  }, 180_000);

  it("killed right after the 202 (before any container): the next process runs the operation", async () => {
    await crashAndResume("after 202");
  }, 180_000);
});

/**
 * The tenant platform's reconciler on the real Docker engine: what the engine holds under this deployment's labels
 * is compared with the workspace rows. A volume labelled as ours with no workspace is an orphan (deleted only when
 * enabled and past the grace); one labelled for another deployment is never listed or touched; a workspace shown
 * online whose container is gone becomes failed with the reason.
 */
import { randomBytes } from "node:crypto";
import { createIdGenerator } from "@molecule/contracts";
import { workspaceResources, workspaces } from "@molecule/db";
import { LABELS, resourceName } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDockerTestPlatform, removeDeployment } from "../test-support/docker-platform.ts";
import type { TestPlatform } from "../test-support/platform.ts";

const docker = new Dockerode();
const deployment = `rec-${randomBytes(4).toString("hex")}`;
const otherDeployment = `rec-other-${randomBytes(4).toString("hex")}`;
const ids = createIdGenerator();
let platform: TestPlatform;

/** A volume named and labelled as the docker backend labels a workspace's (optionally with an environment). */
async function workspaceVolume(
  workspaceId: string,
  labelledDeployment: string,
  environment?: string,
): Promise<string> {
  const name = resourceName(workspaceId);
  await docker.createVolume({
    Name: name,
    Labels: {
      [LABELS.managed]: "true",
      [LABELS.workspaceId]: workspaceId,
      [LABELS.orgId]: "org_test",
      [LABELS.deployment]: labelledDeployment,
      ...(environment ? { [LABELS.environment]: environment } : {}),
    },
  });
  return name;
}

async function volumeExists(name: string): Promise<boolean> {
  try {
    await docker.getVolume(name).inspect();
    return true;
  } catch {
    return false;
  }
}

beforeAll(async () => {
  platform = await createDockerTestPlatform({ docker, deployment, environment: "test" });
});

afterAll(async () => {
  await platform?.close();
  await removeDeployment(docker, deployment);
  await removeDeployment(docker, otherDeployment);
});

describe("the tenant platform's reconciler on docker", () => {
  it("reports an unclaimed volume of this deployment as an orphan and never lists another deployment's or environment's", async () => {
    const stray = await workspaceVolume(ids.next("ws"), deployment, "test");
    const foreign = await workspaceVolume(ids.next("ws"), otherDeployment);
    const otherEnvironment = await workspaceVolume(ids.next("ws"), deployment, "staging");

    const reconciled = await platform.call("POST", "/admin/reconcile");
    expect(reconciled.status).toBe(200);
    expect(reconciled.body.orphans).toBe(1);
    expect(reconciled.body.orphanList).toEqual([
      expect.objectContaining({ backend: "docker", kind: "volume", provider_id: stray, deleted: false }),
    ]);
    expect(reconciled.body.deleteOrphans).toBe(false);

    const stats = await platform.call("GET", "/admin/stats");
    expect(stats.status).toBe(200);
    expect(stats.body).toMatchObject({ orphans: 1, ghosts: 0, hung: 0 });
    expect(stats.body.lastReconcile.at).toBe(reconciled.body.at);
    expect(await volumeExists(stray)).toBe(true);
    expect(await volumeExists(foreign)).toBe(true);
    expect(await volumeExists(otherEnvironment)).toBe(true);
  });

  it("deletes an orphan only when enabled and once it is older than the grace, and never another deployment's", async () => {
    const settings = platform.deps.settings.reconcile;
    const saved = { ...settings };
    Object.assign(settings, { deleteOrphans: true, orphanGraceMs: 60 * 60_000 });
    try {
      const before = await platform.call("POST", "/admin/reconcile");
      expect(before.body.deleted).toBe(0);
      const strays = before.body.orphanList.map((orphan: { provider_id: string }) => orphan.provider_id);
      expect(strays.length).toBe(1);
      for (const name of strays) expect(await volumeExists(name)).toBe(true);

      platform.clock.advance(60 * 60_000);
      const after = await platform.call("POST", "/admin/reconcile");
      expect(after.body.deleted).toBe(1);
      for (const name of strays) expect(await volumeExists(name)).toBe(false);
      const staging = await docker.listVolumes({
        filters: { label: [`${LABELS.deployment}=${deployment}`, `${LABELS.environment}=staging`] },
      });
      expect(staging.Volumes?.length).toBe(1);
      const foreign = await docker.listVolumes({
        filters: { label: [`${LABELS.deployment}=${otherDeployment}`] },
      });
      expect(foreign.Volumes?.length).toBe(1);

      const clean = await platform.call("POST", "/admin/reconcile");
      expect(clean.body.orphans).toBe(0);
    } finally {
      Object.assign(settings, saved);
    }
  });

  it("marks a workspace shown online whose container is gone failed with the reason, and counts it as a ghost", async () => {
    const id = ids.next("ws");
    await platform.deps.db.insert(workspaces).values({
      id,
      orgId: "org_test",
      name: "vanished",
      runtime: "echo",
      tier: 2,
      backend: "docker",
      status: "online",
    });
    const reconciled = await platform.call("POST", "/admin/reconcile");
    expect(reconciled.body.ghosts).toBe(1);
    expect(reconciled.body.ghostList).toEqual([
      expect.objectContaining({ id, subject: "workspace", status: "online", action: "marked_failed" }),
    ]);
    const [row] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
    expect(row?.status).toBe("failed");
    expect(row?.statusReason).toContain("no docker machine or container");

    const again = await platform.call("POST", "/admin/reconcile");
    expect(again.body.ghosts).toBe(0);
  });

  it("audits a provision: volume and container claimed with their provider ids, released by the delete", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "audited", runtime: "echo" },
    });
    expect(created.status).toBe(202);
    const id: string = created.body.workspace.id;
    await platform.runner.drain();
    const rows = async () =>
      (await platform.deps.db.select().from(workspaceResources).where(eq(workspaceResources.subjectId, id)))
        .map((row) => ({ kind: row.kind, name: row.name, state: row.state, providerId: row.providerId }))
        .sort((a, b) => a.kind.localeCompare(b.kind));
    const container = await docker.getContainer(resourceName(id)).inspect();
    expect(container.Config.Labels[LABELS.environment]).toBe("test");
    expect(await rows()).toEqual([
      { kind: "container", name: resourceName(id), state: "claimed", providerId: container.Id },
      { kind: "volume", name: resourceName(id), state: "claimed", providerId: resourceName(id) },
    ]);
    const report = await platform.call("POST", "/admin/reconcile");
    expect(report.body.orphans).toBe(0);

    expect((await platform.call("DELETE", `/workspaces/${id}`)).status).toBe(202);
    await platform.runner.drain();
    expect((await rows()).map((row) => row.state)).toEqual(["released", "released"]);
  });

  it("an intent a crash left behind (the create ran, the claim did not) is resolved by listing", async () => {
    const id = ids.next("ws");
    const volume = await workspaceVolume(id, deployment);
    await platform.deps.db.insert(workspaceResources).values({
      subjectId: id,
      orgId: "org_test",
      backend: "docker",
      kind: "volume",
      name: volume,
      state: "intent",
    });
    const report = await platform.call("POST", "/admin/reconcile");
    expect(report.body.orphanList.map((o: { provider_id: string }) => o.provider_id)).not.toContain(volume);
    const [row] = await platform.deps.db
      .select()
      .from(workspaceResources)
      .where(eq(workspaceResources.subjectId, id));
    expect(row).toMatchObject({ state: "claimed", providerId: volume });
  });
});

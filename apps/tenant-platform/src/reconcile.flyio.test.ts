/**
 * The tenant platform's reconciler on the Fly emulator: a machine destroyed behind the platform's back makes the
 * online workspace `failed` with the reason and counts as a ghost; the volume and machine it made were audited. A
 * volume that was never attached carries no owner (Fly volumes have no metadata): it is this installation's by its
 * name, a workspace id, inside the workspace app, and any other name is left alone.
 */
import { createIdGenerator } from "@molecule/contracts";
import { workspaceResources, workspaces } from "@molecule/db";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type FlyHarness,
  startFlyHarness,
  TEST_APP,
  TEST_DEPLOYMENT,
} from "../../../packages/provisioner-core/src/flyio/testkit.ts";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";

let fly: FlyHarness;
let platform: TestPlatform;

beforeAll(async () => {
  fly = await startFlyHarness();
  platform = await createTestPlatform(fly.provisioner, {
    deployment: TEST_DEPLOYMENT,
    allowedRuntimes: ["hermes"],
  });
});
afterAll(async () => {
  await platform?.close();
  await fly?.close();
});

describe("the tenant platform's reconciler on Fly", () => {
  it("a machine destroyed behind the platform's back: the online workspace becomes failed with the reason, one ghost", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "flown", runtime: "hermes" },
    });
    expect(created.status).toBe(202);
    const id: string = created.body.workspace.id;
    await platform.runner.drain();
    const audit = await platform.deps.db
      .select()
      .from(workspaceResources)
      .where(eq(workspaceResources.subjectId, id));
    expect(audit.map((row) => [row.kind, row.state]).sort()).toEqual([
      ["fly_machine", "claimed"],
      ["fly_volume", "claimed"],
    ]);
    const machineId = audit.find((row) => row.kind === "fly_machine")?.providerId;
    expect(fly.emulator.machines(TEST_APP).map((m) => m.id)).toContain(machineId);
    // The agent's heartbeats would make it online; the row says so directly.
    await platform.deps.db.update(workspaces).set({ status: "online" }).where(eq(workspaces.id, id));

    const healthy = await platform.call("POST", "/admin/reconcile");
    expect(healthy.body).toMatchObject({ orphans: 0, ghosts: 0, errors: [] });

    const destroyed = await fetch(
      `${fly.emulator.url}/v1/apps/${TEST_APP}/machines/${machineId}?force=true`,
      {
        method: "DELETE",
        headers: { authorization: `Bearer ${fly.emulator.token}` },
      },
    );
    expect(destroyed.status).toBe(200);

    const reconciled = await platform.call("POST", "/admin/reconcile");
    expect(reconciled.status).toBe(200);
    expect(reconciled.body.ghosts).toBe(1);
    expect(reconciled.body.ghostList).toEqual([
      expect.objectContaining({ id, status: "online", action: "marked_failed" }),
    ]);
    const workspace = (await platform.call("GET", `/workspaces/${id}`)).body;
    expect(workspace.status).toBe("failed");
    expect(JSON.stringify(workspace)).toContain("the reconciler found no flyio machine or container");
    const stats = await platform.call("GET", "/admin/stats");
    expect(stats.body).toMatchObject({ ghosts: 1, orphans: 0 });
  });

  it("a volume never attached is ours by its workspace-id name: reported as an orphan, deleted past the grace; other names are left alone", async () => {
    const createVolume = async (name: string): Promise<string> => {
      const response = await fetch(`${fly.emulator.url}/v1/apps/${TEST_APP}/volumes`, {
        method: "POST",
        headers: { authorization: `Bearer ${fly.emulator.token}`, "content-type": "application/json" },
        body: JSON.stringify({ name, region: "ord", size_gb: 1 }),
      });
      expect(response.status).toBe(200);
      return ((await response.json()) as { id: string }).id;
    };
    // What a provision leaves when it dies between its volume and its machine, with no row (nor audit) to claim it.
    const strayWorkspace = createIdGenerator().next("ws");
    const stray = await createVolume(strayWorkspace);
    const foreign = await createVolume("someone_elses_data");

    const reported = await platform.call("POST", "/admin/reconcile");
    expect(reported.status).toBe(200);
    const volumes = reported.body.orphanList.filter((o: { kind: string }) => o.kind === "fly_volume");
    expect(volumes).toEqual([
      expect.objectContaining({ provider_id: stray, workspace_id: strayWorkspace, deleted: false }),
    ]);

    // The reconciler reads its settings object on each pass.
    const settings = platform.deps.settings.reconcile;
    Object.assign(settings, { deleteOrphans: true, orphanGraceMs: 0 });
    try {
      const deleted = await platform.call("POST", "/admin/reconcile");
      expect(deleted.body.orphanList).toEqual([
        expect.objectContaining({ provider_id: stray, workspace_id: strayWorkspace, deleted: true }),
      ]);
    } finally {
      Object.assign(settings, { deleteOrphans: false, orphanGraceMs: 60 * 60_000 });
    }
    const left = fly.emulator.volumes(TEST_APP).filter((v) => v.state !== "destroyed");
    expect(left.map((v) => v.id)).toContain(foreign);
    expect(left.map((v) => v.id)).not.toContain(stray);
  });
});

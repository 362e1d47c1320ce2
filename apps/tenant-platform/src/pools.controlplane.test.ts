/**
 * Warm pools on a SaaS tenant (the controlplane backend, against the control plane's emulator over real signed HTTP):
 * the tenant keeps the pool's rows and the claim; the control plane makes each member (labelled with its pool),
 * suspends it once its agent waits, resumes it with the start of the create that claimed it, and destroys it when the
 * pool drains. A control plane whose workspace backend cannot suspend gets no pool: a 409 says why.
 */
import { poolMembers } from "@molecule/db";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ControlPlaneHarness,
  startControlPlaneHarness,
} from "../../../packages/provisioner-core/src/controlplane/testkit.ts";
import { createTestPlatform, errorOf, type TestPlatform } from "../../../test-support/platform.ts";
import { waitFor } from "../../../test-support/wait.ts";

describe("warm pools through the control plane", () => {
  let cp: ControlPlaneHarness;
  let platform: TestPlatform;

  beforeAll(async () => {
    cp = await startControlPlaneHarness({ emulator: { suspend: true } });
    // As main() sets it for a controlplane backend whose control plane can suspend.
    platform = await createTestPlatform(cp.provisioner, {
      orgId: cp.emulator.orgId,
      suspendPoolMembers: true,
    });
    await platform.listen();
  });
  afterAll(async () => {
    await platform?.close();
    await cp?.close();
  });

  const memberRows = () => platform.database.db.select().from(poolMembers);
  const onCp = (id: string) => cp.emulator.workspace(id);

  /** Plays each running member's agent (one claim wait, nothing yet) until `ready` members wait suspended. */
  const poolSuspended = (ready: number) =>
    waitFor(
      `${ready} ready members suspended on the control plane`,
      async () => {
        const rows = await memberRows();
        for (const row of rows) {
          const member = onCp(row.id);
          if (row.state !== "starting" || member?.state !== "running") continue;
          await platform.callServed("POST", "/registry/claim", {
            token: member.spec.env.WORKSPACE_POOL_TOKEN,
            body: { id: row.id, wait_seconds: 0 },
          });
        }
        const suspended = rows.filter(
          (row) => row.state === "ready" && row.suspendedAt !== null && onCp(row.id)?.state === "suspended",
        );
        return suspended.length === ready && rows.every((row) => row.state !== "starting")
          ? suspended
          : undefined;
      },
      30_000,
      50,
    );

  const statusBecomes = (id: string, status: string) =>
    waitFor(`workspace ${id} to be ${status}`, async () => {
      const workspace = (await platform.call("GET", `/workspaces/${id}`)).body;
      return workspace.status === status ? workspace : undefined;
    });

  it("the control plane makes each member labelled with its pool; a claim resumes one with a start, its agent comes online with its own secrets; size 0 destroys the rest there", async () => {
    // Tier 4 is above the control plane's suspend limit (2048 MB, as Fly's): its members could not wait suspended.
    const tooBig = await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 4, size: 1 } });
    expect(tooBig.status).toBe(409);
    expect(errorOf(tooBig).message).toMatch(/cannot suspend a tier 4 workspace/);
    const put = await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 2 } });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect((await platform.call("GET", "/pools")).body.pools).toHaveLength(1);
    const members = await poolSuspended(2);
    const memberIds = members.map((row) => row.id).sort();
    for (const id of memberIds) {
      const member = onCp(id);
      expect(member?.spec.pool).toBe("echo-t2");
      expect(member?.spec.env.WORKSPACE_BOOT_TOKEN).toBeUndefined();
      expect(member?.spec.secret_keys).toEqual(["WORKSPACE_POOL_TOKEN"]);
    }
    // The control plane lists the members as the org's workspaces: this tenant's reconciler counts them in their pool.
    const report = (await platform.call("POST", "/admin/reconcile")).body;
    expect(report.orphans).toBe(0);
    expect(report.resources.byPool).toEqual({ "echo-t2": 2 });

    const created = await platform.call("POST", "/workspaces", {
      body: { name: "saas-claimed", runtime: "echo", tier: 2, secrets: { ONLY_MINE: "claimant-value" } },
    });
    expect(created.status).toBe(202);
    expect(created.body.operation.kind).toBe("start");
    const id: string = created.body.workspace.id;
    expect(memberIds).toContain(id);
    await statusBecomes(id, "awaiting_agent");
    // Resumed by the control plane (the same process: no rebuild), through a start without the pool label.
    expect(onCp(id)).toMatchObject({ state: "running", generation: 1 });
    const starts = cp.emulator.requests.filter(
      (request) => request.method === "POST" && request.path === `/cp/workspaces/${id}/start`,
    );
    expect(starts.map((request) => request.outcome)).toEqual([202]);

    const waited = await platform.callServed("POST", "/registry/claim", {
      token: onCp(id)?.spec.env.WORKSPACE_POOL_TOKEN,
      body: { id, wait_seconds: 0 },
    });
    expect(waited.body).toMatchObject({ claimed: true, workspace_id: id, name: "saas-claimed" });
    const registered = await platform.call("POST", "/registry/register", {
      token: waited.body.boot_token,
      body: { id },
    });
    expect(registered.status, JSON.stringify(registered.body)).toBe(200);
    expect(registered.body.secrets).toEqual({ ONLY_MINE: "claimant-value" });
    await statusBecomes(id, "online");

    // The claimed member is replaced on the control plane; draining destroys every unclaimed member there.
    const refilled = await poolSuspended(2);
    expect(refilled.map((row) => row.id)).not.toContain(id);
    expect(
      (await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 0 } })).status,
    ).toBe(200);
    await waitFor("the drained members to be destroyed on the control plane", async () => {
      const rows = await memberRows();
      return rows.every((row) => row.state === "claimed") && refilled.every((row) => !onCp(row.id))
        ? true
        : undefined;
    });
    expect(onCp(id)?.state).toBe("running");
    const [claimedRow] = await platform.database.db.select().from(poolMembers).where(eq(poolMembers.id, id));
    expect(claimedRow?.state).toBe("claimed");
  }, 60_000);
});

describe("warm pools through a control plane whose workspace backend cannot suspend", () => {
  let cp: ControlPlaneHarness;
  let platform: TestPlatform;

  beforeAll(async () => {
    cp = await startControlPlaneHarness({ emulator: { suspend: false } });
    platform = await createTestPlatform(cp.provisioner, { orgId: cp.emulator.orgId });
  });
  afterAll(async () => {
    await platform?.close();
    await cp?.close();
  });

  it("are refused with a 409 that says why, and nothing is stored; size 0 is still accepted", async () => {
    const refused = await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 3 } });
    expect(refused.status).toBe(409);
    expect(errorOf(refused)).toMatchObject({
      code: "conflict",
      message: expect.stringMatching(/control plane.*suspend/),
    });
    expect((await platform.call("GET", "/pools")).body).toEqual({ pools: [] });
    const drained = await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 0 } });
    expect(drained.status).toBe(200);
    expect(drained.body).toMatchObject({ size: 0, ready: 0, starting: 0 });
    expect(cp.emulator.requests.filter((request) => request.path.startsWith("/cp/workspaces"))).toEqual([]);
  });
});

import { CpOperationView } from "@molecule/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type FlyHarness,
  startFlyHarness,
  TEST_APP,
  TEST_DEPLOYMENT,
} from "../../../packages/provisioner-core/src/flyio/testkit.ts";
import { createTestControlPlane, type TenantIdentity, type TestControlPlane } from "./testing.ts";

let fly: FlyHarness;
let cp: TestControlPlane;
let org: TenantIdentity;

beforeAll(async () => {
  fly = await startFlyHarness();
  cp = await createTestControlPlane({
    provisioner: fly.provisioner,
    settings: { deployment: TEST_DEPLOYMENT },
  });
  org = await cp.createOrg("fly-org");
  await cp.runner.drain();
});
afterAll(async () => {
  await cp.close();
  await fly.close();
});

const live = () => fly.emulator.machines(TEST_APP).filter((machine) => machine.state !== "destroyed");

async function run(method: string, path: string, body?: unknown) {
  const accepted = await cp.tenant(org, method, path, body === undefined ? {} : { body });
  expect(accepted.status, `${method} ${path}: ${accepted.text}`).toBe(202);
  await cp.runner.drain();
  const shown = await cp.tenant(org, "GET", `/cp/operations/${accepted.body.operation.id}`);
  const operation = CpOperationView.parse(shown.body);
  expect(operation.status, JSON.stringify(operation.error)).toBe("succeeded");
  return operation;
}

describe("the control plane with the flyio workspace backend, against the Fly emulator", () => {
  it("provisions, stops, starts and destroys one workspace through the signed API", async () => {
    const id = "ws_01jcpflyio0000000000000001";
    const spec = {
      workspace_id: id,
      runtime: "hermes",
      tier: 2,
      env: { WORKSPACE_ID: id, WORKSPACE_BOOT_TOKEN: "fly-boot-secret" },
      secret_keys: ["WORKSPACE_BOOT_TOKEN"],
      metadata: {},
    };
    const provision = await run("POST", "/cp/workspaces/provision", spec);
    expect(provision.steps.length).toBeGreaterThan(0);
    expect(live()).toHaveLength(1);
    const machine = live()[0];
    expect(JSON.stringify(machine?.config.metadata)).toContain(org.orgId);
    expect((machine?.config.env as Record<string, string>).WORKSPACE_BOOT_TOKEN).toBe("fly-boot-secret");
    // The machine's address on Fly's private network travels back to the tenant in the operation's result.
    const agentUrl = `http://${machine?.id}.vm.${TEST_APP}.internal:8000`;
    expect((machine?.config.env as Record<string, string>).AGENT_PUBLIC_URL).toBe(agentUrl);
    expect(provision.result).toEqual({ agent_url: agentUrl });
    expect(fly.emulator.volumes(TEST_APP)).toHaveLength(1);
    expect((await cp.tenant(org, "GET", `/cp/workspaces/${id}/status`)).body.state).toBe("running");

    await run("POST", `/cp/workspaces/${id}/stop`, {});
    expect(fly.emulator.machines(TEST_APP).find((m) => m.id === machine?.id)?.state).toBe("stopped");
    expect((await cp.tenant(org, "GET", `/cp/workspaces/${id}/status`)).body.state).toBe("stopped");

    const started = await run("POST", `/cp/workspaces/${id}/start`, { spec, recreate: false });
    expect(fly.emulator.machines(TEST_APP).find((m) => m.id === machine?.id)?.state).toBe("started");
    expect(started.result).toEqual(provision.result);
    const stopped = await run("POST", `/cp/workspaces/${id}/stop`, {});
    expect(stopped.result).toBeNull();
    const rebuilt = await run("POST", `/cp/workspaces/${id}/start`, { spec, recreate: true });
    const [again] = live();
    expect(again?.id).not.toBe(machine?.id);
    expect(rebuilt.result).toEqual({ agent_url: `http://${again?.id}.vm.${TEST_APP}.internal:8000` });

    await run("DELETE", `/cp/workspaces/${id}`);
    expect(live()).toHaveLength(0);
    expect(fly.emulator.volumes(TEST_APP)).toHaveLength(0);
    expect((await cp.tenant(org, "GET", `/cp/workspaces/${id}/status`)).body.state).toBe("missing");
    expect(fly.emulator.violations).toEqual([]);
  });

  it("a volume never attached (no metadata) takes its org from the workspace's row and is deleted past the grace; one of a workspace it never had is only reported", async () => {
    const createVolume = async (name: string): Promise<string> => {
      const response = await fetch(`${fly.emulator.url}/v1/apps/${TEST_APP}/volumes`, {
        method: "POST",
        headers: { authorization: `Bearer ${fly.emulator.token}`, "content-type": "application/json" },
        body: JSON.stringify({ name, region: "ord", size_gb: 1 }),
      });
      expect(response.status).toBe(200);
      return ((await response.json()) as { id: string }).id;
    };
    // A create that landed after the workspace's destroy (the first test's workspace, its row kept as destroyed).
    const late = await createVolume("ws_01jcpflyio0000000000000001");
    const unknown = await createVolume("ws_01jcpflyio0000000000000999");
    const settings = cp.deps.settings.reconcile;
    Object.assign(settings, { deleteOrphans: true, orphanGraceMs: 0 });
    try {
      const reconciled = await cp.admin("POST", "/cp/admin/reconcile");
      expect(reconciled.status).toBe(200);
      const volumes = reconciled.body.orphanList.filter((o: { kind: string }) => o.kind === "fly_volume");
      expect(volumes).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ provider_id: late, org_id: null, deleted: true }),
          expect.objectContaining({ provider_id: unknown, org_id: null, deleted: false }),
        ]),
      );
    } finally {
      Object.assign(settings, { deleteOrphans: false, orphanGraceMs: 60 * 60_000 });
    }
    const left = fly.emulator.volumes(TEST_APP).map((volume) => volume.id);
    expect(left).not.toContain(late);
    expect(left).toContain(unknown);
  });
});

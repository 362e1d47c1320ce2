/**
 * The agent's address on Fly: every machine is told `AGENT_PUBLIC_URL=http://<machine id>.vm.<app>.internal:<port>`
 * before it first boots (created unlaunched, then updated with the address, which launches it), and the handle
 * carries the same URL for the platform.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS } from "../naming.ts";
import type { WorkspaceSpec } from "../provisioner.ts";
import { type FlyHarness, startFlyHarness, TEST_APP } from "./testkit.ts";

let h: FlyHarness;

beforeAll(async () => {
  // Patient with leases held by others: the one test that holds one lets go after a moment, never near this.
  h = await startFlyHarness({ provisioner: { leaseWaitMs: 120_000 } });
});
afterAll(async () => {
  await h.close();
  expect(h.emulator.violations).toEqual([]);
});

function liveMachinesOf(spec: WorkspaceSpec) {
  return h.emulator
    .machines(TEST_APP)
    .filter((m) => (m.config.metadata as Record<string, string>)[LABELS.workspaceId] === spec.workspaceId);
}

function envOf(spec: WorkspaceSpec): Record<string, string> {
  const machines = liveMachinesOf(spec);
  expect(machines).toHaveLength(1);
  return (machines[0]?.config.env ?? {}) as Record<string, string>;
}

const ref = (spec: WorkspaceSpec, handle: Awaited<ReturnType<FlyHarness["provisioner"]["provision"]>>) => ({
  workspaceId: spec.workspaceId,
  orgId: spec.orgId,
  handle,
});

describe("flyio: the agent's address", () => {
  it("a new machine boots knowing its private-network address, and the handle carries the same", async () => {
    const spec = h.makeSpec();
    h.emulator.resetCounts();
    const handle = await h.provisioner.provision(spec, null);
    const [machine] = liveMachinesOf(spec);
    const expected = `http://${machine?.id}.vm.${TEST_APP}.internal:8000`;
    expect(handle.agentUrl).toBe(expected);
    expect(envOf(spec)).toMatchObject({ AGENT_PUBLIC_URL: expected, AGENT_PORT: "8000" });
    expect(machine?.state).toBe("started");
    // Created unlaunched, then one update gives it the address and launches it; nothing else is added.
    const counts = h.emulator.requestCounts();
    expect(counts.Machines_create).toBe(1);
    expect(counts.Machines_update).toBe(1);
    expect(counts.Machines_start).toBeUndefined();
    // It first booted with the address: nothing ran between its creation and the update.
    expect(machine?.events.map((e) => e.type).reverse()).toEqual(["launch", "update", "starting", "started"]);

    // Stopped and started again: the same machine, the same address, no second update.
    h.emulator.resetCounts();
    await h.provisioner.stop(ref(spec, handle));
    const started = await h.provisioner.start(spec, handle);
    expect(started.agentUrl).toBe(expected);
    expect(h.emulator.requestCounts().Machines_update).toBeUndefined();
  });

  it("a recreated machine gets a new id and with it a new address", async () => {
    const spec = h.makeSpec();
    const handle = await h.provisioner.provision(spec, null);
    const rebuilt = await h.provisioner.start(spec, handle, { recreate: true });
    expect(rebuilt.machineId).not.toBe(handle.machineId);
    expect(rebuilt.agentUrl).toBe(`http://${rebuilt.machineId}.vm.${TEST_APP}.internal:8000`);
    expect(envOf(spec).AGENT_PUBLIC_URL).toBe(rebuilt.agentUrl);
  });

  it("uses the spec's AGENT_PORT, and the default port where the spec leaves the port to the agent", async () => {
    const fixed = h.makeSpec();
    fixed.env = { ...fixed.env, AGENT_PORT: "9100" };
    const handle = await h.provisioner.provision(fixed, null);
    expect(handle.agentUrl).toBe(`http://${handle.machineId}.vm.${TEST_APP}.internal:9100`);
    expect(envOf(fixed)).toMatchObject({ AGENT_PORT: "9100", AGENT_PUBLIC_URL: handle.agentUrl });

    const any = h.makeSpec();
    any.env = { ...any.env, AGENT_PORT: "0" };
    const other = await h.provisioner.provision(any, null);
    expect(other.agentUrl).toBe(`http://${other.machineId}.vm.${TEST_APP}.internal:8000`);
    expect(envOf(any)).toMatchObject({ AGENT_PORT: "8000", AGENT_PUBLIC_URL: other.agentUrl });
  });

  it("a machine without its address (made before addresses were assigned) gets it when it is next started", async () => {
    const spec = h.makeSpec();
    const handle = await h.provisioner.provision(spec, null);
    await h.provisioner.stop(ref(spec, handle));
    const [machine] = liveMachinesOf(spec);
    const { AGENT_PUBLIC_URL: _dropped, ...older } = envOf(spec);
    if (machine) machine.config = { ...machine.config, env: older };

    const started = await h.provisioner.start(spec, handle);
    expect(started.machineId).toBe(handle.machineId);
    expect(envOf(spec).AGENT_PUBLIC_URL).toBe(handle.agentUrl);
    expect(liveMachinesOf(spec)[0]?.state).toBe("started");
    // The rest of its config is kept as it was.
    expect(envOf(spec)).toMatchObject(older);
  });

  it("waits for a lease someone else holds before the update, then updates under its own", async () => {
    const spec = h.makeSpec();
    // The machine is found unaddressed and leased by someone else, who lets go shortly.
    const handle = await h.provisioner.provision(spec, null);
    await h.provisioner.stop({ workspaceId: spec.workspaceId, orgId: spec.orgId, handle: null });
    const [machine] = liveMachinesOf(spec);
    const { AGENT_PUBLIC_URL: _dropped, ...older } = envOf(spec);
    if (!machine) throw new Error("no machine");
    machine.config = { ...machine.config, env: older };
    machine.lease = {
      nonce: "someoneelse",
      owner: "other@example.com",
      description: "not ours",
      expiresAt: Math.floor(Date.now() / 1000) + 30,
    };
    // The holder lets go once we have been refused and have asked who holds it (not on a timer: on a loaded machine a
    // timer can fire before our first update, which then needs no wait at all).
    h.emulator.inject({
      operation: "Machines_show_lease",
      kind: "slow",
      delayMs: 0,
      when: () => {
        machine.lease = null;
        return true;
      },
    });
    h.emulator.resetCounts();
    const started = await h.provisioner.start(spec, null);
    expect(envOf(spec).AGENT_PUBLIC_URL).toBe(started.agentUrl);
    const counts = h.emulator.requestCounts();
    expect(counts.Machines_update).toBe(2);
    expect(counts.Machines_release_lease).toBe(1);
    expect(started.agentUrl).toBe(handle.agentUrl);
  });
});

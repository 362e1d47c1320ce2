import { createIdGenerator } from "@molecule/contracts";
import { describe, expect, it } from "vitest";
import { describeProvisioner } from "./conformance.ts";
import { ProvisionerError } from "./errors.ts";
import { createFakeProvisioner } from "./fake.ts";
import type { WorkspaceSpec } from "./provisioner.ts";

function specFactory(deployment = "fake-test") {
  return (overrides: Partial<WorkspaceSpec> = {}): WorkspaceSpec => ({
    workspaceId: createIdGenerator().next("ws"),
    orgId: "org_fake",
    deployment,
    runtime: "echo",
    tier: 2,
    env: { WORKSPACE_ID: overrides.workspaceId ?? "", WORKSPACE_BOOT_TOKEN: "boot-secret" },
    secretKeys: [],
    metadata: {},
    ...overrides,
  });
}

describeProvisioner("fake (suspend)", async () => {
  const fake = createFakeProvisioner({ latencyMs: 2, bootMs: 20 });
  return {
    provisioner: fake,
    makeSpec: specFactory(),
    faults: { failNextProvisionPartway: () => fake.crashAfterStep("volume_ready") },
  };
});

describeProvisioner("fake (no suspend)", async () => {
  const fake = createFakeProvisioner({ suspend: false, latencyMs: { provision: 5 } });
  return {
    provisioner: fake,
    makeSpec: specFactory(),
    faults: { failNextProvisionPartway: () => fake.crashAfterStep("instance_created") },
  };
});

describe("fake provisioner fault injection", () => {
  const makeSpec = specFactory();

  it("fails the next calls of one method with the given error, then recovers", async () => {
    const fake = createFakeProvisioner();
    const spec = makeSpec();
    const boom = new ProvisionerError("capacity", "no room", true);
    fake.failNext("provision", boom, 2);
    await expect(fake.provision(spec, null)).rejects.toBe(boom);
    await expect(fake.provision(spec, null)).rejects.toBe(boom);
    expect(fake.inspect(spec.workspaceId)).toBeUndefined();
    const handle = await fake.provision(spec, null);
    expect(handle).toMatchObject({ backend: "fake" });
    expect((await fake.status({ ...spec, handle })).state).toBe("running");
  });

  it("defaults to a retryable backend_unavailable error and only affects the named method", async () => {
    const fake = createFakeProvisioner();
    const spec = makeSpec();
    fake.failNext("stop");
    await fake.provision(spec, null);
    const error = await fake.stop({ ...spec, handle: null }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProvisionerError);
    expect(error).toMatchObject({ code: "backend_unavailable", retryable: true });
    expect(fake.inspect(spec.workspaceId)?.instance?.state).toBe("running");
  });

  it("hangs until the signal aborts, with a retryable timeout error", async () => {
    const fake = createFakeProvisioner();
    const spec = makeSpec();
    fake.hangNext("provision");
    const controller = new AbortController();
    const pending = fake.provision(spec, null, { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(fake.hangingCount()).toBe(1);
    controller.abort(new Error("deadline"));
    await expect(pending).rejects.toMatchObject({ code: "timeout", retryable: true });
    expect(fake.hangingCount()).toBe(0);
    expect(fake.inspect(spec.workspaceId)).toBeUndefined();
  });

  it("a hang released by releaseHangs proceeds normally", async () => {
    const fake = createFakeProvisioner();
    const spec = makeSpec();
    fake.hangNext("provision");
    const pending = fake.provision(spec, null);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(fake.inspect(spec.workspaceId)).toBeUndefined();
    fake.releaseHangs();
    await pending;
    expect(fake.inspect(spec.workspaceId)?.instance?.state).toBe("running");
  });

  it("latency is abortable", async () => {
    const fake = createFakeProvisioner({ latencyMs: 10_000 });
    const started = Date.now();
    await expect(fake.provision(makeSpec(), null, { signal: AbortSignal.timeout(30) })).rejects.toMatchObject(
      { code: "timeout" },
    );
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("crashAfterStep leaves the partial state and the retry reuses it", async () => {
    const fake = createFakeProvisioner();
    const spec = makeSpec();
    const steps: string[] = [];
    fake.crashAfterStep("volume_ready");
    await expect(fake.provision(spec, null, { step: (s) => steps.push(s) })).rejects.toMatchObject({
      retryable: true,
    });
    expect(steps).toEqual(["image_ready", "volume_ready"]);
    const partial = fake.inspect(spec.workspaceId);
    expect(partial?.volume?.id).toBeTruthy();
    expect(partial?.instance).toBeNull();
    const handle = await fake.provision(spec, null);
    expect(handle.volumeId).toBe(partial?.volume?.id);
  });

  it("reports every step in order", async () => {
    const fake = createFakeProvisioner();
    const steps: string[] = [];
    await fake.provision(makeSpec(), null, { step: (s) => steps.push(s) });
    expect(steps).toEqual(["image_ready", "volume_ready", "instance_created", "instance_started"]);
  });

  it("an unavailable runtime fails with image_unavailable and creates nothing", async () => {
    const fake = createFakeProvisioner({ unavailableRuntimes: ["doesnotexist"] });
    const spec = makeSpec({ runtime: "doesnotexist" });
    await expect(fake.provision(spec, null)).rejects.toMatchObject({
      code: "image_unavailable",
      retryable: false,
    });
    expect(await fake.listManaged()).toEqual([]);
  });

  it("a process exit is stopped with the exit code; instance loss is missing and start recreates it", async () => {
    const fake = createFakeProvisioner();
    const spec = makeSpec();
    const handle = await fake.provision(spec, null);
    fake.simulateExit(spec.workspaceId, 137);
    expect(await fake.status({ ...spec, handle })).toEqual({
      state: "stopped",
      detail: "exited with code 137",
    });
    fake.simulateInstanceLoss(spec.workspaceId);
    expect((await fake.status({ ...spec, handle })).state).toBe("missing");
    const restarted = await fake.start(spec, handle);
    expect(restarted.volumeId).toBe(handle.volumeId);
    expect(restarted.instanceId).not.toBe(handle.instanceId);
    expect((await fake.status({ ...spec, handle: restarted })).state).toBe("running");
  });

  it("refuses large tiers for suspend when limited, stopping instead", async () => {
    const fake = createFakeProvisioner({ suspendMaxMemoryMb: 2048 });
    const spec = makeSpec({ tier: 4 });
    await fake.provision(spec, null);
    const result = await fake.suspend({ ...spec, handle: null });
    expect(result.suspended).toBe(false);
    expect(result.reason).toMatch(/2048 MB/);
    expect((await fake.status({ ...spec, handle: null })).state).toBe("stopped");
  });

  it("reports starting until bootMs has passed", async () => {
    let clock = 1_000;
    const fake = createFakeProvisioner({ bootMs: 500, now: () => clock });
    const spec = makeSpec();
    await fake.provision(spec, null);
    expect((await fake.status({ ...spec, handle: null })).state).toBe("starting");
    clock += 500;
    expect((await fake.status({ ...spec, handle: null })).state).toBe("running");
  });
});

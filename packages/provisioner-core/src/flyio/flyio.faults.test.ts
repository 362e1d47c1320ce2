import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { FaultAction } from "../../../fly-emulator/src/index.ts";
import { ProvisionerError } from "../errors.ts";
import { LABELS } from "../naming.ts";
import type { WorkspaceSpec } from "../provisioner.ts";
import { flyVolumeName } from "./provisioner.ts";
import { type FlyHarness, startFlyHarness, TEST_APP } from "./testkit.ts";

const FAULTS: [string, FaultAction][] = [
  ["429 without Retry-After", { kind: "status", status: 429 }],
  ["429 with Retry-After", { kind: "status", status: 429, retryAfter: "1" }],
  ["500", { kind: "status", status: 500 }],
  ["502", { kind: "status", status: 502 }],
  ["503", { kind: "status", status: 503 }],
  ["a connection dropped after the request was applied", { kind: "drop-after" }],
  ["a connection dropped before the request was applied", { kind: "drop-before" }],
  ["a slow response", { kind: "slow", delayMs: 25 }],
];

const OPERATIONS = {
  provision: [
    "Volumes_list",
    "Volumes_create",
    "Machines_list",
    "Machines_create",
    "Machines_update",
    "Machines_wait",
  ],
  stop: ["Machines_create_lease", "Machines_stop", "Machines_wait", "Machines_release_lease"],
  suspend: ["Machines_create_lease", "Machines_suspend", "Machines_wait", "Machines_release_lease"],
  destroy: ["Machines_create_lease", "Machines_delete", "Machines_wait", "Volume_delete"],
} as const;

let h: FlyHarness;

beforeAll(async () => {
  h = await startFlyHarness();
});
afterAll(async () => {
  await h.close();
  expect(h.emulator.violations).toEqual([]);
});
beforeEach(() => {
  h.emulator.clearFaults();
  h.sleeps.length = 0;
});

/** Exactly one machine and one volume per live workspace, none for deleted ones. */
function expectWorld(live: WorkspaceSpec[], deleted: WorkspaceSpec[] = []) {
  const machines = h.emulator.machines(TEST_APP);
  const volumes = h.emulator.volumes(TEST_APP);
  const machinesOf = (s: WorkspaceSpec) =>
    machines.filter(
      (m) => (m.config.metadata as Record<string, string>)[LABELS.workspaceId] === s.workspaceId,
    );
  const volumesOf = (s: WorkspaceSpec) => volumes.filter((v) => v.name === flyVolumeName(s.workspaceId));
  for (const s of live) {
    expect(machinesOf(s), `machines of ${s.workspaceId}`).toHaveLength(1);
    expect(volumesOf(s), `volumes of ${s.workspaceId}`).toHaveLength(1);
    expect(volumesOf(s)[0]?.attachedMachineId).toBe(machinesOf(s)[0]?.id);
  }
  for (const s of deleted) {
    expect(machinesOf(s), `machines of deleted ${s.workspaceId}`).toHaveLength(0);
    expect(volumesOf(s), `volumes of deleted ${s.workspaceId}`).toHaveLength(0);
  }
}

function ref(spec: WorkspaceSpec) {
  return { workspaceId: spec.workspaceId, orgId: spec.orgId, handle: null };
}

function arm(operation: string, fault: FaultAction) {
  h.emulator.inject({ operation, ...fault });
}

/** The armed fault was hit, so the operation really went through it. */
function expectFaultConsumed() {
  expect(h.emulator.pendingFaults()).toBe(0);
}

describe.each(FAULTS)("with %s", (_label, fault) => {
  it.each(OPERATIONS.provision)("provision survives it on %s", async (operation) => {
    const spec = h.makeSpec();
    h.emulator.resetCounts();
    arm(operation, fault);
    const handle = await h.provisioner.provision(spec, null);
    expect(handle).toMatchObject({ backend: "flyio", region: "ord", machineId: expect.any(String) });
    expectFaultConsumed();
    if (fault.kind === "status" && fault.retryAfter) expect(h.sleeps).toContain(1000);
    expect((await h.provisioner.status(ref(spec))).state).toBe("running");
    expectWorld([spec]);
    const machine = h.emulator.machines(TEST_APP).find((m) => m.id === handle.machineId);
    expect((machine?.config.env as Record<string, string>).AGENT_PUBLIC_URL).toBe(handle.agentUrl);
  });

  it.each(OPERATIONS.stop)("stop survives it on %s", async (operation) => {
    const spec = h.makeSpec();
    await h.provisioner.provision(spec, null);
    arm(operation, fault);
    await h.provisioner.stop(ref(spec));
    expectFaultConsumed();
    expect((await h.provisioner.status(ref(spec))).state).toBe("stopped");
    expectWorld([spec]);
  });

  it.each(OPERATIONS.suspend)("suspend survives it on %s", async (operation) => {
    const spec = h.makeSpec();
    await h.provisioner.provision(spec, null);
    arm(operation, fault);
    await expect(h.provisioner.suspend(ref(spec))).resolves.toEqual({ suspended: true });
    expectFaultConsumed();
    expect((await h.provisioner.status(ref(spec))).state).toBe("suspended");
    expectWorld([spec]);
  });

  it.each(OPERATIONS.destroy)("destroy survives it on %s", async (operation) => {
    const keep = h.makeSpec();
    const spec = h.makeSpec();
    await h.provisioner.provision(keep, null);
    const handle = await h.provisioner.provision(spec, null);
    arm(operation, fault);
    await h.provisioner.destroy({ ...ref(spec), handle });
    expectFaultConsumed();
    expect((await h.provisioner.status(ref(spec))).state).toBe("missing");
    expectWorld([keep], [spec]);
  });
});

describe("failures that must not be retried away", () => {
  it("a 400 on machine create fails at once naming the refused field and the request id, and keeps the volume", async () => {
    const spec = h.makeSpec();
    arm("Machines_create", { kind: "status", status: 400, error: "invalid config.guest: emulated" });
    h.emulator.resetCounts();
    const error = await h.provisioner.provision(spec, null).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProvisionerError);
    expect(error).toMatchObject({ code: "invalid_spec", retryable: false });
    expect((error as Error).message).toMatch(
      /HTTP 400: Fly refused the machine configuration \(invalid config\.guest\).*fly-request-id 01EMU/,
    );
    // Fly's own words are not passed on: a create's answer may quote the config it refused.
    expect((error as Error).message).not.toContain("emulated");
    expect((error as ProvisionerError).details.flyRequestId).toMatch(/^01EMU/);
    expect(h.emulator.requestCounts().Machines_create).toBe(1);
    const [volume] = h.emulator.volumes(TEST_APP).filter((v) => v.name === flyVolumeName(spec.workspaceId));
    expect(volume).toBeDefined();
    const handle = await h.provisioner.provision(spec, null);
    expect(handle.volumeId).toBe(volume?.id);
    expectWorld([spec]);
  });

  it("persistent 503s give up after maxAttempts with a retryable backend_unavailable", async () => {
    const spec = h.makeSpec();
    h.emulator.inject({ operation: "Machines_create", kind: "status", status: 503, times: 50 });
    h.emulator.resetCounts();
    await expect(h.provisioner.provision(spec, null)).rejects.toMatchObject({
      code: "backend_unavailable",
      retryable: true,
    });
    expect(h.emulator.requestCounts().Machines_create).toBe(5);
    h.emulator.clearFaults();
    await h.provisioner.provision(spec, null);
    expectWorld([spec]);
  });

  it("a wrong token fails with 401 naming FLY_API_TOKEN", async () => {
    const other = await startFlyHarness({ provisioner: { apiToken: "wrong" } });
    try {
      await expect(other.provisioner.provision(other.makeSpec(), null)).rejects.toThrow(/401.*FLY_API_TOKEN/);
      expect((await other.provisioner.status(ref(other.makeSpec()))).state).toBe("unknown");
    } finally {
      await other.close();
    }
  });

  it("a lease held by someone else makes stop wait, then fail with a retryable conflict", async () => {
    const spec = h.makeSpec();
    const handle = await h.provisioner.provision(spec, null);
    const res = await fetch(`${h.emulator.url}/v1/apps/${TEST_APP}/machines/${handle.machineId}/lease`, {
      method: "POST",
      headers: { authorization: `Bearer ${h.emulator.token}`, "content-type": "application/json" },
      body: JSON.stringify({ ttl: 60, description: "someone else" }),
    });
    expect(res.status).toBe(201);
    await expect(h.provisioner.stop(ref(spec))).rejects.toMatchObject({ code: "conflict", retryable: true });
    expect((await h.provisioner.status(ref(spec))).state).toBe("running");
  });
});

describe("regions and capacity", () => {
  it("uses spec.metadata.region when given", async () => {
    const spec = h.makeSpec({ metadata: { region: "ams" } });
    const handle = await h.provisioner.provision(spec, null);
    expect(handle.region).toBe("ams");
    expect(h.emulator.volumes(TEST_APP).find((v) => v.name === flyVolumeName(spec.workspaceId))?.region).toBe(
      "ams",
    );
  });

  it("falls back to the next region on insufficient_capacity, moving the volume too", async () => {
    const other = await startFlyHarness({ provisioner: { fallbackRegions: ["iad", "ams"] } });
    try {
      other.emulator.setCapacity("ord", false);
      other.emulator.setCapacity("iad", false, { volumes: true });
      const spec = other.makeSpec();
      const steps: string[] = [];
      const handle = await other.provisioner.provision(spec, null, {
        step: (name, detail) => steps.push(`${name} ${detail}`),
      });
      expect(handle.region).toBe("ams");
      expect(other.emulator.volumes(TEST_APP).map((v) => v.region)).toEqual(["ams"]);
      expect(other.emulator.machines(TEST_APP).map((m) => m.region)).toEqual(["ams"]);
      expect(steps.filter((s) => s.startsWith("region_full"))).toHaveLength(2);
      expect(steps).toContain(`machine_created machine_id=${handle.machineId} region=ams`);
      expect(other.emulator.violations).toEqual([]);
    } finally {
      await other.close();
    }
  });

  it("fails with a retryable capacity error when every region is full, keeping one volume", async () => {
    const other = await startFlyHarness({ provisioner: { fallbackRegions: ["iad"] } });
    try {
      other.emulator.setCapacity("ord", false);
      other.emulator.setCapacity("iad", false);
      const spec = other.makeSpec();
      const error = await other.provisioner.provision(spec, null).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: "capacity", retryable: true });
      expect((error as Error).message).toMatch(/HTTP 412: insufficient capacity.*fly-request-id/);
      expect(other.emulator.volumes(TEST_APP)).toHaveLength(1);
      expect(other.emulator.machines(TEST_APP)).toHaveLength(0);
      other.emulator.setCapacity("iad", true);
      const handle = await other.provisioner.provision(spec, null);
      expect(handle.region).toBe("iad");
      expect(other.emulator.volumes(TEST_APP).map((v) => v.region)).toEqual(["iad"]);
    } finally {
      await other.close();
    }
  });
});

describe("waiting", () => {
  it("keeps waiting across 408 answers of /wait", async () => {
    const other = await startFlyHarness({ emulator: { waitCapMs: 15, delays: { bootMs: 80 } } });
    try {
      await other.provisioner.provision(other.makeSpec(), null);
      expect(other.emulator.requestCounts().Machines_wait).toBeGreaterThan(2);
      expect(other.emulator.log.some((e) => e.operationId === "Machines_wait" && e.status === 408)).toBe(
        true,
      );
    } finally {
      await other.close();
    }
  });

  it("gives up at the configured deadline with a retryable timeout", async () => {
    const other = await startFlyHarness({
      emulator: { waitCapMs: 15, delays: { bootMs: 2_000 } },
      provisioner: { waitDeadlineMs: 60 },
    });
    try {
      await expect(other.provisioner.provision(other.makeSpec(), null)).rejects.toMatchObject({
        code: "timeout",
        retryable: true,
      });
    } finally {
      await other.close();
    }
  });
});

describe("machine shape, status and listing", () => {
  it("sizes by tier, mounts the volume, passes config as base64 env, no services, no secrets in metadata", async () => {
    for (const [tier, kind, cpus, memory, gb] of [
      [2, "shared", 1, 512, 1],
      [3, "performance", 2, 2048, 5],
      [4, "performance", 4, 4096, 10],
    ] as const) {
      const spec = h.makeSpec({ tier });
      const handle = await h.provisioner.provision(spec, null);
      const machine = h.emulator.machines(TEST_APP).find((m) => m.id === handle.machineId);
      const config = machine?.config as Record<string, unknown>;
      expect(config.image).toBe("registry.fly.io/molecule-hermes:test");
      expect(config.guest).toEqual({ cpu_kind: kind, cpus, memory_mb: memory });
      expect(config.mounts).toEqual([{ volume: handle.volumeId, path: "/workspace" }]);
      expect(config.services).toBeUndefined();
      expect(config.files).toBeUndefined();
      const env = config.env as Record<string, string>;
      expect(env.WORKSPACE_BOOT_TOKEN).toBe("boot-secret");
      const decoded = JSON.parse(Buffer.from(env.MOLECULE_CONFIG_B64 ?? "", "base64").toString("utf8"));
      expect(decoded).toMatchObject({ workspaceId: spec.workspaceId, orgId: spec.orgId, tier });
      expect(JSON.stringify(config.metadata)).not.toContain("boot-secret");
      expect(config.metadata).toEqual({
        [LABELS.managed]: "true",
        [LABELS.workspaceId]: spec.workspaceId,
        [LABELS.orgId]: spec.orgId,
        [LABELS.deployment]: spec.deployment,
      });
      expect(h.emulator.volumes(TEST_APP).find((v) => v.id === handle.volumeId)?.sizeGb).toBe(gb);
    }
  });

  it("suspends tiers up to 2 GB; a 4 GB machine is stopped instead and says why", async () => {
    const big = h.makeSpec({ tier: 4 });
    await h.provisioner.provision(big, null);
    const result = await h.provisioner.suspend(ref(big));
    expect(result.suspended).toBe(false);
    expect(result.reason).toMatch(/4096 MB.*2048 MB.*stopped instead/);
    expect((await h.provisioner.status(ref(big))).state).toBe("stopped");
    const started = await h.provisioner.start(big, null);
    expect(started.machineId).toBeDefined();
    expect((await h.provisioner.status(ref(big))).state).toBe("running");
  });

  it("reports transient errors as unknown, never missing", async () => {
    const spec = h.makeSpec();
    const handle = await h.provisioner.provision(spec, null);
    h.emulator.inject({ operation: "*", kind: "status", status: 503, times: 100 });
    const status = await h.provisioner.status({ ...ref(spec), handle });
    h.emulator.clearFaults();
    expect(status.state).toBe("unknown");
    expect(status.detail).toMatch(/503/);
  });

  it("lists this deployment's machines and volumes, including a stray volume, and not another deployment's", async () => {
    const spec = h.makeSpec();
    await h.provisioner.provision(spec, null);
    const stray = h.makeSpec();
    arm("Machines_create", { kind: "status", status: 400 });
    await expect(h.provisioner.provision(stray, null)).rejects.toThrow();
    await fetch(`${h.emulator.url}/v1/apps/${TEST_APP}/machines`, {
      method: "POST",
      headers: { authorization: `Bearer ${h.emulator.token}`, "content-type": "application/json" },
      body: JSON.stringify({
        name: "foreign",
        config: { image: "x:1", metadata: { [LABELS.deployment]: "other" } },
      }),
    });
    const managed = await h.provisioner.listManaged();
    const mine = managed.filter((r) => r.workspaceId === spec.workspaceId).map((r) => r.kind);
    expect(mine.sort()).toEqual(["fly_machine", "fly_volume"]);
    expect(managed.filter((r) => r.workspaceId === stray.workspaceId).map((r) => r.kind)).toEqual([
      "fly_volume",
    ]);
    expect(managed.some((r) => r.workspaceId === null)).toBe(false);
    await h.provisioner.destroy(ref(stray));
    expectWorld([spec], [stray]);
  });

  it("copes with Fly's per-machine rate limits", async () => {
    const other = await startFlyHarness({
      emulator: { rateLimit: { perSecond: 20, burst: 1, getPerSecond: 20, getBurst: 1 } },
      provisioner: { retry: { maxAttempts: 8, baseDelayMs: 20, maxDelayMs: 200, maxElapsedMs: 5_000 } },
      realSleep: true,
    });
    try {
      const spec = other.makeSpec();
      await other.provisioner.provision(spec, null);
      await other.provisioner.stop(ref(spec));
      await other.provisioner.start(spec, null);
      await other.provisioner.destroy(ref(spec));
      expect(other.emulator.log.some((e) => e.status === 429)).toBe(true);
      expect(other.emulator.machines(TEST_APP)).toHaveLength(0);
    } finally {
      await other.close();
    }
  });
});

describe("a volume create that lands after its answer was lost", () => {
  it("a later provision removes the late twin; listManaged shows it meanwhile; destroy removes all", async () => {
    const other = await startFlyHarness({ provisioner: { requestTimeoutMs: 40 } });
    try {
      other.emulator.inject({ operation: "Volumes_create", kind: "slow", delayMs: 60 });
      const spec = other.makeSpec();
      await other.provisioner.provision(spec, null);
      await new Promise((resolve) => setTimeout(resolve, 80));
      // The slow create has landed by now (unless the first provision already swept it).
      const twins = other.emulator.volumes(TEST_APP).length;
      expect(twins).toBeGreaterThanOrEqual(1);
      const managed = await other.provisioner.listManaged();
      expect(managed.filter((r) => r.kind === "fly_volume")).toHaveLength(twins);
      await other.provisioner.provision(spec, null);
      expect(other.emulator.volumes(TEST_APP)).toHaveLength(1);
      expect(other.emulator.volumes(TEST_APP)[0]?.attachedMachineId).toBeTruthy();
      await other.provisioner.destroy(ref(spec));
      expect(other.emulator.volumes(TEST_APP)).toHaveLength(0);
    } finally {
      await other.close();
    }
  });
});

describe("a lifecycle call whose signal fires (its operation was abandoned at its deadline)", () => {
  it("ends a Fly request that never answers with a retryable timeout; a later provision converges", async () => {
    // Machine create is held far longer than any test runs: only the abort can end the call.
    h.emulator.inject({ operation: "Machines_create", kind: "slow", delayMs: 10 * 60_000 });
    const spec = h.makeSpec();
    const machines = h.emulator.machines(TEST_APP).length;
    const abandon = new AbortController();
    const call = h.provisioner.provision(spec, null, {
      signal: abandon.signal,
      step: (name) => {
        if (name === "volume_created") abandon.abort(new Error("deadline passed"));
      },
    });
    await expect(call).rejects.toMatchObject({ code: "timeout", retryable: true });
    h.emulator.clearFaults();
    await h.provisioner.provision(spec, null);
    expect(h.emulator.machines(TEST_APP)).toHaveLength(machines + 1);
    await h.provisioner.destroy(ref(spec));
    expect(h.emulator.machines(TEST_APP)).toHaveLength(machines);
  });
});

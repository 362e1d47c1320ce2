/**
 * The EC2 provisioner's fault suite, in parts that test files register: every AWS fault × every call of
 * provision/stop/start/destroy, the proxy's fidelity (NotFound windows, shutting-down, ClientToken replay) and the
 * failures that must not be retried away. Split over two files so the test runner's forks run them side by side, each
 * against its own moto: moto's answers slow down as it accumulates workspaces (~18 ms a call at first, ~45 ms after 50
 * tests), so two halves each pay half that growth. (A fresh moto per describe block is no cheaper: starting one costs
 * 15-25 s on a busy machine.)
 */
import {
  DescribeInstancesCommand,
  DescribeSecurityGroupsCommand,
  TerminateInstancesCommand,
} from "@aws-sdk/client-ec2";
import { ListSecretsCommand } from "@aws-sdk/client-secrets-manager";
import type { FaultAction } from "@molecule/aws-emulator";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { WorkspaceSpec } from "../provisioner.ts";
import { INSTANCE_PROFILE_REQUIRED } from "./bootstrap.ts";
import type { Ec2Handle } from "./provisioner.ts";
import { deleteSecurityGroup } from "./security-group.ts";
import { EC2_TAGS } from "./tags.ts";
import { type Ec2Harness, startEc2Harness, TEST_BOOT_TOKEN, TEST_SCOPE } from "./testkit.ts";

type LabelledFault = [string, FaultAction];

/** AWS answering with a service error. */
export const SERVICE_FAULTS: LabelledFault[] = [
  ["RequestLimitExceeded", { kind: "throttle" }],
  ["500", { kind: "internal-error" }],
  ["503", { kind: "unavailable" }],
];

/** The connection failing or slow. */
export const CONNECTION_FAULTS: LabelledFault[] = [
  ["a connection dropped before the request was applied", { kind: "drop-before" }],
  ["a connection dropped after the request was applied", { kind: "drop-after" }],
  ["a slow response", { kind: "slow", delayMs: 25 }],
];

const OPERATIONS = {
  provision: [
    "DescribeSecurityGroups",
    "CreateSecurityGroup",
    "AuthorizeSecurityGroupIngress",
    "secretsmanager.CreateSecret",
    "DescribeInstances",
    "RunInstances",
  ],
  stop: ["DescribeInstances", "StopInstances"],
  start: ["DescribeInstances", "StartInstances"],
  destroy: ["DescribeInstances", "TerminateInstances", "DeleteSecurityGroup", "secretsmanager.DeleteSecret"],
} as const;

let h: Ec2Harness;
/** Workspaces a test made: destroyed after it, so moto's state (and its answers' time) stays small. */
const made: WorkspaceSpec[] = [];
const makeSpec = () => {
  const spec = h.makeSpec();
  made.push(spec);
  return spec;
};

/** A workspace of the same org that every destroy must leave alone. */
let neighbour: WorkspaceSpec;

/** A harness (its own moto) for the file, a neighbour workspace, and every test's workspaces destroyed after it. */
export function useFaultHarness(): void {
  beforeAll(async () => {
    h = await startEc2Harness();
    neighbour = h.makeSpec();
    await h.provisioner.provision(neighbour, null);
  }, 120_000);
  afterAll(async () => {
    await h?.close();
  });
  beforeEach(() => {
    h.emulator.clearFaults();
    h.emulator.setTerminationsStuck(false);
  });
  afterEach(async () => {
    h.emulator.clearFaults();
    h.emulator.setTerminationsStuck(false);
    for (const spec of made.splice(0)) await h.provisioner.destroy(ref(spec));
  });
}

const byWorkspace = (s: WorkspaceSpec) => [{ Name: `tag:${EC2_TAGS.workspaceId}`, Values: [s.workspaceId] }];

/** What AWS holds of a workspace, seen through the proxy once every fault is spent. */
async function worldOf(s: WorkspaceSpec) {
  const aws = h.inspect;
  const instances = (
    await aws.ec2.send(
      new DescribeInstancesCommand({
        Filters: [
          ...byWorkspace(s),
          {
            Name: "instance-state-name",
            Values: ["pending", "running", "stopping", "stopped", "shutting-down"],
          },
        ],
      }),
    )
  ).Reservations?.flatMap((r) => r.Instances ?? []);
  const groups = (await aws.ec2.send(new DescribeSecurityGroupsCommand({ Filters: byWorkspace(s) })))
    .SecurityGroups;
  const secrets = (
    await aws.secrets.send(
      new ListSecretsCommand({ Filters: [{ Key: "tag-value", Values: [s.workspaceId] }] }),
    )
  ).SecretList;
  return {
    instances: (instances ?? []).map((i) => ({ id: i.InstanceId, state: i.State?.Name })),
    groups: (groups ?? []).map((g) => g.GroupId),
    secrets: (secrets ?? []).map((x) => x.ARN),
  };
}

/** Exactly one instance, group and secret per live workspace; nothing for deleted ones. */
async function expectWorld(live: WorkspaceSpec[], deleted: WorkspaceSpec[] = []) {
  expect(h.emulator.pendingFaults(), "every armed fault was hit").toBe(0);
  for (const s of live) {
    const world = await worldOf(s);
    expect(world.instances, `instances of ${s.workspaceId}`).toHaveLength(1);
    expect(world.groups, `groups of ${s.workspaceId}`).toHaveLength(1);
    expect(world.secrets, `secrets of ${s.workspaceId}`).toHaveLength(1);
  }
  for (const s of deleted) {
    expect(await worldOf(s), `what is left of deleted ${s.workspaceId}`).toEqual({
      instances: [],
      groups: [],
      secrets: [],
    });
  }
}

function ref(spec: WorkspaceSpec, handle: Ec2Handle | null = null) {
  return { workspaceId: spec.workspaceId, orgId: spec.orgId, handle };
}

function arm(action: string, fault: FaultAction) {
  h.emulator.inject({ action, ...fault });
}

/** Each fault on each call of provision, stop, start and destroy: the call succeeds and the world is exact. */
export function describeFaultMatrix(faults: LabelledFault[]): void {
  describe.each(faults)("with %s", (_label, fault) => {
    it.each(OPERATIONS.provision)("provision survives it on %s", async (action) => {
      const spec = makeSpec();
      arm(action, fault);
      const handle = (await h.provisioner.provision(spec, null, {
        operationId: `op-${action}`,
      })) as Ec2Handle;
      expect(handle).toMatchObject({ backend: "ec2", instanceId: expect.stringMatching(/^i-/) });
      expect((await h.provisioner.status(ref(spec))).state).toBe("running");
      await expectWorld([spec]);
    });

    it.each(OPERATIONS.stop)("stop survives it on %s", async (action) => {
      const spec = makeSpec();
      await h.provisioner.provision(spec, null);
      arm(action, fault);
      await h.provisioner.stop(ref(spec));
      expect((await h.provisioner.status(ref(spec))).state).toBe("stopped");
      await expectWorld([spec]);
    });

    it.each(OPERATIONS.start)("start survives it on %s", async (action) => {
      const spec = makeSpec();
      const handle = (await h.provisioner.provision(spec, null)) as Ec2Handle;
      await h.provisioner.stop(ref(spec));
      arm(action, fault);
      const started = (await h.provisioner.start(spec, handle)) as Ec2Handle;
      expect(started.instanceId).toBe(handle.instanceId);
      expect((await h.provisioner.status(ref(spec))).state).toBe("running");
      await expectWorld([spec]);
    });

    it.each(OPERATIONS.destroy)("destroy survives it on %s", async (action) => {
      const spec = makeSpec();
      const handle = (await h.provisioner.provision(spec, null)) as Ec2Handle;
      arm(action, fault);
      await h.provisioner.destroy(ref(spec, handle));
      expect((await h.provisioner.status(ref(spec))).state).toBe("missing");
      await expectWorld([neighbour], [spec]);
    });
  });
}

/** What AWS does and moto does not: NotFound windows, ClientToken replay, DependencyViolation, stuck shutdowns. */
export function describeFidelity(): void {
  describe("fidelity", () => {
    it("a RunInstances answer lost in the NotFound window: the retry's ClientToken gets the same instance", async () => {
      const spec = makeSpec();
      arm("RunInstances", { kind: "drop-after" });
      h.emulator.resetCounts();
      const handle = (await h.provisioner.provision(spec, null, {
        operationId: "op_lost_answer",
      })) as Ec2Handle;
      // The lookup by tags could not see the new instance yet; the replayed token answered it.
      expect(h.emulator.counts().RunInstances).toBe(2);
      await expectWorld([spec]);
      expect((await worldOf(spec)).instances[0]?.id).toBe(handle.instanceId);
    });

    it("a new attempt of the same operation after a lost answer gets the same instance", async () => {
      const spec = makeSpec();
      arm("RunInstances", { kind: "drop-after" });
      h.emulator.inject({ action: "RunInstances", kind: "internal-error", times: 10 });
      await expect(
        h.provisioner.provision(spec, null, { operationId: "op_two_attempts" }),
      ).rejects.toMatchObject({
        retryable: true,
      });
      h.emulator.clearFaults();
      const handle = (await h.provisioner.provision(spec, null, {
        operationId: "op_two_attempts",
      })) as Ec2Handle;
      await expectWorld([spec]);
      expect((await worldOf(spec)).instances[0]?.id).toBe(handle.instanceId);
    });

    it("waits out InvalidInstanceID.NotFound right after a create", async () => {
      h.emulator.setTiming({ notFoundMs: 3_000 });
      try {
        const spec = makeSpec();
        const before = h.clock.now();
        await h.provisioner.provision(spec, null);
        expect(h.clock.now() - before).toBeGreaterThanOrEqual(3_000);
        expect((await h.provisioner.status(ref(spec))).state).toBe("running");
        await expectWorld([spec]);
      } finally {
        h.emulator.setTiming({ notFoundMs: 100 });
      }
    });

    it.each([
      "AuthorizeSecurityGroupIngress",
      "RunInstances",
    ])("waits out a new security group not visible yet to %s (InvalidGroup.NotFound)", async (action) => {
      const spec = makeSpec();
      h.emulator.inject({ action, kind: "error", status: 400, code: "InvalidGroup.NotFound", times: 2 });
      await h.provisioner.provision(spec, null);
      expect((await h.provisioner.status(ref(spec))).state).toBe("running");
      await expectWorld([spec]);
    });

    it("a group that never becomes visible fails retryably, and a retry finishes", async () => {
      const spec = makeSpec();
      h.emulator.inject({
        action: "RunInstances",
        kind: "error",
        status: 400,
        code: "InvalidGroup.NotFound",
        times: 50,
      });
      await expect(h.provisioner.provision(spec, null)).rejects.toMatchObject({
        code: "not_found",
        retryable: true,
      });
      h.emulator.clearFaults();
      await h.provisioner.provision(spec, null);
      await expectWorld([spec]);
    });

    it("retries DependencyViolation while the instance using the group shuts down", async () => {
      const spec = makeSpec();
      const handle = (await h.provisioner.provision(spec, null)) as Ec2Handle;
      await h.inspect.ec2.send(new TerminateInstancesCommand({ InstanceIds: [handle.instanceId] }));
      h.emulator.resetCounts();
      await deleteSecurityGroup(h.provisioner.vms.aws, handle.securityGroupId, h.clock.now() + 60_000);
      expect(h.emulator.counts().DeleteSecurityGroup).toBeGreaterThan(1);
      await h.provisioner.destroy(ref(spec, handle));
      await expectWorld([], [spec]);
    });

    it("a stuck shutdown fails the destroy retryably at the deadline, keeping group and secret; a retry finishes", async () => {
      const spec = makeSpec();
      const handle = (await h.provisioner.provision(spec, null)) as Ec2Handle;
      h.emulator.setTerminationsStuck(true);
      const error = await h.provisioner.destroy(ref(spec, handle)).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: "timeout", retryable: true });
      expect((error as Error).message).toContain(`instance ${handle.instanceId} is still shutting-down`);
      const stuck = await worldOf(spec);
      expect(stuck.instances).toEqual([{ id: handle.instanceId, state: "shutting-down" }]);
      expect(stuck.groups).toHaveLength(1);
      expect(stuck.secrets).toHaveLength(1);
      expect(
        (await h.provisioner.listManaged()).filter((r) => r.workspaceId === spec.workspaceId),
      ).toHaveLength(3);
      h.emulator.setTerminationsStuck(false);
      await h.provisioner.destroy(ref(spec, null));
      await expectWorld([], [spec]);
    });
  });
}

/** Refusals, persistent throttling, capacity, transient status errors, missing configuration. */
export function describeUnretryableFailures(): void {
  describe("failures that must not be retried away", () => {
    it("a refused RunInstances fails at once, not retryable, keeping group and secret for the next provision", async () => {
      const spec = makeSpec();
      arm("RunInstances", {
        kind: "error",
        status: 400,
        code: "InvalidParameterValue",
        message: TEST_BOOT_TOKEN,
      });
      h.emulator.resetCounts();
      const error = await h.provisioner.provision(spec, null).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: "invalid_spec", retryable: false });
      expect((error as Error).message).toMatch(/RunInstances failed: .*InvalidParameterValue, HTTP 400/);
      expect((error as Error).message).not.toContain(TEST_BOOT_TOKEN);
      expect(h.emulator.counts().RunInstances).toBe(1);
      const partial = await worldOf(spec);
      expect(partial.instances).toEqual([]);
      await h.provisioner.provision(spec, null);
      const after = await worldOf(spec);
      expect(after.groups).toEqual(partial.groups);
      expect(after.secrets).toEqual(partial.secrets);
      await expectWorld([spec]);
    });

    it("persistent throttling gives up with a retryable rate_limited naming the call", async () => {
      const spec = makeSpec();
      h.emulator.inject({ action: "RunInstances", kind: "throttle", times: 50 });
      await expect(h.provisioner.provision(spec, null)).rejects.toMatchObject({
        code: "rate_limited",
        retryable: true,
        message: expect.stringMatching(/RunInstances failed: throttled \(RequestLimitExceeded, HTTP 503\)/),
      });
      h.emulator.clearFaults();
      await h.provisioner.provision(spec, null);
      await expectWorld([spec]);
    });

    it("insufficient capacity is a retryable capacity error", async () => {
      const spec = makeSpec();
      arm("RunInstances", { kind: "error", status: 500, code: "InsufficientInstanceCapacity" });
      await expect(h.provisioner.provision(spec, null)).rejects.toMatchObject({
        code: "capacity",
        retryable: true,
      });
    });

    it("reports transient errors as unknown, never missing", async () => {
      const spec = makeSpec();
      await h.provisioner.provision(spec, null);
      h.emulator.inject({ action: "DescribeInstances", kind: "unavailable", times: 100 });
      const status = await h.provisioner.status(ref(spec));
      h.emulator.clearFaults();
      expect(status.state).toBe("unknown");
      expect(status.detail).toMatch(/503/);
    });

    it("names what is required when no instance profile is configured", async () => {
      const { createEc2Provisioner } = await import("./provisioner.ts");
      const { testProvisionerOptions } = await import("./testkit.ts");
      expect(() =>
        createEc2Provisioner({ ...testProvisionerOptions(h.net, h.inspect), instanceProfile: undefined }),
      ).toThrow(INSTANCE_PROFILE_REQUIRED);
    });

    it("lists this deployment's resources only, including a partly provisioned workspace", async () => {
      const spec = makeSpec();
      arm("RunInstances", { kind: "error", status: 400, code: "InvalidParameterValue" });
      await expect(h.provisioner.provision(spec, null)).rejects.toThrow();
      const managed = await h.provisioner.listManaged();
      expect(
        managed
          .filter((r) => r.workspaceId === spec.workspaceId)
          .map((r) => r.kind)
          .sort(),
      ).toEqual(["ec2_bootstrap_secret", "ec2_security_group"]);
      expect(managed.every((r) => r.orgId !== null)).toBe(true);
      expect(TEST_SCOPE.environment).toBe("test");
      await h.provisioner.destroy(ref(spec));
      await expectWorld([], [spec]);
    });
  });
}

/** A lifecycle call abandoned at its deadline stops talking to AWS. */
export function describeAbandonedCalls(): void {
  describe("a lifecycle call whose signal fires (its operation was abandoned at its deadline)", () => {
    it("ends an AWS request that never answers with a retryable timeout; a later provision converges", async () => {
      const spec = makeSpec();
      // RunInstances is held far longer than any test runs: only the abort can end the call.
      arm("RunInstances", { kind: "slow", delayMs: 10 * 60_000 });
      const abandon = new AbortController();
      const call = h.provisioner.provision(spec, null, {
        operationId: "op_abandoned",
        signal: abandon.signal,
        step: (name) => {
          if (name === "bootstrap_stored") abandon.abort(new Error("deadline passed"));
        },
      });
      await expect(call).rejects.toMatchObject({ retryable: true });
      h.emulator.clearFaults();
      await h.provisioner.provision(spec, null, { operationId: "op_abandoned" });
      await expectWorld([spec]);
      await h.provisioner.destroy(ref(spec));
      await expectWorld([], [spec]);
    });
  });
}

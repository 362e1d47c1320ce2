import {
  CreateSecurityGroupCommand,
  CreateTagsCommand,
  DeleteSecurityGroupCommand,
  DescribeInstancesCommand,
  DescribeSecurityGroupsCommand,
  type EC2Client,
  RunInstancesCommand,
  StopInstancesCommand,
  TerminateInstancesCommand,
} from "@aws-sdk/client-ec2";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type AwsEmulator, startAwsEmulator } from "./emulator.ts";
import { ec2Client, failureOf, ManualClock, motoInstances, newRun, runTags, TEST_AMI } from "./testing.ts";

const clock = new ManualClock();
let aws: AwsEmulator;
let ec2: EC2Client;

beforeAll(async () => {
  aws = await startAwsEmulator({ now: clock.now, timing: { shuttingDownMs: 200, notFoundMs: 100 } });
  ec2 = ec2Client(aws.endpoint);
});
afterAll(async () => {
  ec2?.destroy();
  await aws?.close();
});
beforeEach(() => {
  aws.setTerminationsStuck(false);
  aws.clearFaults();
});

async function launch(run: string, extra: { ClientToken?: string; SecurityGroupIds?: string[] } = {}) {
  const out = await ec2.send(
    new RunInstancesCommand({
      ImageId: TEST_AMI,
      MinCount: 1,
      MaxCount: 1,
      InstanceType: "t3.micro",
      TagSpecifications: runTags(run),
      ...extra,
    }),
  );
  return out.Instances?.[0]?.InstanceId as string;
}

async function stateOf(instanceId: string) {
  const out = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }));
  return out.Reservations?.[0]?.Instances?.[0]?.State;
}

describe("RunInstances with a ClientToken", () => {
  it("answers the first call's result to a repeat instead of starting a second instance", async () => {
    const run = newRun();
    const first = await launch(run, { ClientToken: `token-${run}` });
    const again = await launch(run, { ClientToken: `token-${run}` });
    expect(again).toBe(first);
    expect(await motoInstances(aws.motoEndpoint, run)).toEqual([{ id: first, state: "running" }]);
  });

  it("answers IdempotentParameterMismatch to the same token with other parameters", async () => {
    const run = newRun();
    await launch(run, { ClientToken: `token-${run}` });
    const failure = await failureOf(
      ec2.send(
        new RunInstancesCommand({
          ImageId: TEST_AMI,
          MinCount: 1,
          MaxCount: 1,
          InstanceType: "m5.large",
          ClientToken: `token-${run}`,
          TagSpecifications: runTags(run),
        }),
      ),
    );
    expect(failure).toEqual({ name: "IdempotentParameterMismatch", status: 400 });
    expect(await motoInstances(aws.motoEndpoint, run)).toHaveLength(1);
  });

  it("starts one instance for concurrent calls with one token", async () => {
    const run = newRun();
    const ids = await Promise.all([1, 2, 3].map(() => launch(run, { ClientToken: `token-${run}` })));
    expect(new Set(ids).size).toBe(1);
    expect(await motoInstances(aws.motoEndpoint, run)).toHaveLength(1);
  });

  it("forgets a token after 24 hours", async () => {
    const run = newRun();
    const first = await launch(run, { ClientToken: `token-${run}` });
    clock.advance(aws.timing.clientTokenTtlMs + 1);
    const later = await launch(run, { ClientToken: `token-${run}` });
    expect(later).not.toBe(first);
    expect(await motoInstances(aws.motoEndpoint, run)).toHaveLength(2);
  });

  it("keeps tokens apart per region", async () => {
    const run = newRun();
    const west = ec2Client(aws.endpoint, 1, "us-west-2");
    try {
      const east = await launch(run, { ClientToken: `token-${run}` });
      const out = await west.send(
        new RunInstancesCommand({ ImageId: TEST_AMI, MinCount: 1, MaxCount: 1, ClientToken: `token-${run}` }),
      );
      expect(out.Instances?.[0]?.InstanceId).not.toBe(east);
    } finally {
      west.destroy();
    }
  });
});

describe("a new instance's NotFound window", () => {
  it("hides the instance from DescribeInstances, filters, CreateTags and TerminateInstances, then shows it", async () => {
    const run = newRun();
    const id = await launch(run);

    expect(await failureOf(ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] })))).toEqual({
      name: "InvalidInstanceID.NotFound",
      status: 400,
    });
    const filtered = await ec2.send(
      new DescribeInstancesCommand({ Filters: [{ Name: "tag:test-run", Values: [run] }] }),
    );
    expect(filtered.Reservations).toEqual([]);
    expect(
      await failureOf(ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: "k", Value: "v" }] }))),
    ).toEqual({ name: "InvalidInstanceID.NotFound", status: 400 });
    expect(await failureOf(ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] })))).toEqual({
      name: "InvalidInstanceID.NotFound",
      status: 400,
    });
    expect(await motoInstances(aws.motoEndpoint, run)).toEqual([{ id, state: "running" }]);

    clock.advance(aws.timing.notFoundMs);
    expect(await stateOf(id)).toEqual({ Code: 16, Name: "running" });
    await ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: "k", Value: "v" }] }));
  });
});

describe("TerminateInstances", () => {
  it("passes through shutting-down (code 32) before terminated", async () => {
    const run = newRun();
    const id = await launch(run);
    clock.advance(aws.timing.notFoundMs);

    const out = await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    expect(out.TerminatingInstances).toEqual([
      {
        InstanceId: id,
        CurrentState: { Code: 32, Name: "shutting-down" },
        PreviousState: { Code: 16, Name: "running" },
      },
    ]);
    expect(await stateOf(id)).toEqual({ Code: 32, Name: "shutting-down" });
    const again = await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    expect(again.TerminatingInstances?.[0]?.PreviousState?.Name).toBe("shutting-down");
    expect(await failureOf(ec2.send(new StopInstancesCommand({ InstanceIds: [id] })))).toEqual({
      name: "IncorrectInstanceState",
      status: 400,
    });
    expect(await motoInstances(aws.motoEndpoint, run)).toEqual([{ id, state: "running" }]);

    clock.advance(aws.timing.shuttingDownMs);
    expect(await stateOf(id)).toEqual({ Code: 48, Name: "terminated" });
    expect(await motoInstances(aws.motoEndpoint, run)).toEqual([{ id, state: "terminated" }]);
  });

  it("applies instance-state filters to the state it shows", async () => {
    const run = newRun();
    const id = await launch(run);
    clock.advance(aws.timing.notFoundMs);
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    const withState = async (state: string) => {
      const out = await ec2.send(
        new DescribeInstancesCommand({
          Filters: [
            { Name: "tag:test-run", Values: [run] },
            { Name: "instance-state-name", Values: [state] },
          ],
        }),
      );
      return (out.Reservations ?? []).flatMap((r) => r.Instances ?? []).map((i) => i.InstanceId);
    };
    expect(await withState("running")).toEqual([]);
    expect(await withState("shutting-down")).toEqual([id]);
    clock.advance(aws.timing.shuttingDownMs);
    expect(await withState("terminated")).toEqual([id]);
  });

  it("never finishes while terminations are stuck, and finishes once unstuck", async () => {
    const run = newRun();
    const id = await launch(run);
    clock.advance(aws.timing.notFoundMs);
    aws.setTerminationsStuck(true);
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    clock.advance(60 * 60 * 1000);
    expect(await stateOf(id)).toEqual({ Code: 32, Name: "shutting-down" });

    aws.setTerminationsStuck(false);
    expect(await stateOf(id)).toEqual({ Code: 32, Name: "shutting-down" });
    clock.advance(aws.timing.shuttingDownMs);
    expect(await stateOf(id)).toEqual({ Code: 48, Name: "terminated" });
  });
});

describe("DeleteSecurityGroup", () => {
  it("answers DependencyViolation while an instance that is not terminated uses the group", async () => {
    const run = newRun();
    const group = await ec2.send(new CreateSecurityGroupCommand({ GroupName: run, Description: "test" }));
    const groupId = group.GroupId as string;
    const id = await launch(run, { SecurityGroupIds: [groupId] });
    clock.advance(aws.timing.notFoundMs);

    const inUse = { name: "DependencyViolation", status: 400 };
    expect(await failureOf(ec2.send(new DeleteSecurityGroupCommand({ GroupId: groupId })))).toEqual(inUse);
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    expect(await failureOf(ec2.send(new DeleteSecurityGroupCommand({ GroupId: groupId })))).toEqual(inUse);

    clock.advance(aws.timing.shuttingDownMs);
    await ec2.send(new DeleteSecurityGroupCommand({ GroupId: groupId }));
    expect(
      await failureOf(ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [groupId] }))),
    ).toMatchObject({ name: "InvalidGroup.NotFound" });
  });
});

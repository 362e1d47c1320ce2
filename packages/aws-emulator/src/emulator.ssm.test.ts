/**
 * SSM Run Command through the proxy with the real `@aws-sdk/client-ssm`: moto's `Success` by default; a scripted
 * command fails with its exit code and output, or stays `InProgress` until the test finishes it or its
 * executionTimeout passes on the proxy's clock (`TimedOut`), or it is cancelled; scripts apply per instance or to the
 * next command; a command for an instance that is not running is refused as AWS refuses it.
 */
import { RunInstancesCommand, StopInstancesCommand } from "@aws-sdk/client-ec2";
import {
  CancelCommandCommand,
  GetCommandInvocationCommand,
  SendCommandCommand,
  SSMClient,
} from "@aws-sdk/client-ssm";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type AwsEmulator, startAwsEmulator } from "./emulator.ts";
import { ec2Client, failureOf, ManualClock, newRun, runTags, TEST_AMI, TEST_REGION } from "./testing.ts";

const clock = new ManualClock();
let aws: AwsEmulator;
let ssm: SSMClient;

beforeAll(async () => {
  aws = await startAwsEmulator({ now: clock.now, timing: { notFoundMs: 0 } });
  ssm = new SSMClient({
    endpoint: aws.endpoint,
    region: TEST_REGION,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    maxAttempts: 1,
  });
});
afterAll(async () => {
  ssm?.destroy();
  await aws?.close();
});
beforeEach(() => aws.clearFaults());

async function launch(): Promise<string> {
  const ec2 = ec2Client(aws.endpoint);
  try {
    const out = await ec2.send(
      new RunInstancesCommand({
        ImageId: TEST_AMI,
        MinCount: 1,
        MaxCount: 1,
        InstanceType: "t3.micro",
        TagSpecifications: runTags(newRun()),
      }),
    );
    return out.Instances?.[0]?.InstanceId as string;
  } finally {
    ec2.destroy();
  }
}

async function send(instanceId: string, executionTimeout = "600"): Promise<string> {
  const out = await ssm.send(
    new SendCommandCommand({
      DocumentName: "AWS-RunShellScript",
      InstanceIds: [instanceId],
      Parameters: { commands: ["echo hello"], executionTimeout: [executionTimeout] },
    }),
  );
  return out.Command?.CommandId as string;
}

const invocation = (commandId: string, instanceId: string) =>
  ssm.send(new GetCommandInvocationCommand({ CommandId: commandId, InstanceId: instanceId }));

describe("SSM Run Command through the proxy", () => {
  it("answers moto's Success without a script, and records the command sent", async () => {
    const instanceId = await launch();
    const commandId = await send(instanceId);
    expect(await invocation(commandId, instanceId)).toMatchObject({ Status: "Success", ResponseCode: 0 });
    expect(aws.sentCommands().at(-1)).toEqual({
      commandId,
      instanceIds: [instanceId],
      documentName: "AWS-RunShellScript",
      commands: ["echo hello"],
      comment: "",
    });
  });

  it("fails a scripted command with its exit code and output, only on the instance it names", async () => {
    const target = await launch();
    const other = await launch();
    aws.scriptCommand({
      instanceId: target,
      outcome: { status: "Failed", exitCode: 2, output: "pulling", errorOutput: "manifest unknown" },
    });
    const onOther = await send(other);
    expect(await invocation(onOther, other)).toMatchObject({ Status: "Success" });
    expect(aws.pendingCommandScripts()).toBe(1);
    const onTarget = await send(target);
    expect(await invocation(onTarget, target)).toMatchObject({
      Status: "Failed",
      StatusDetails: "Failed",
      ResponseCode: 2,
      StandardOutputContent: "pulling",
      StandardErrorContent: "manifest unknown",
    });
    expect(aws.pendingCommandScripts()).toBe(0);
    // Used up: the next command on it is moto's again.
    expect(await invocation(await send(target), target)).toMatchObject({ Status: "Success" });
  });

  it("keeps a scripted command InProgress until finished, or until its executionTimeout passes", async () => {
    const instanceId = await launch();
    aws.scriptCommand({ outcome: { status: "InProgress", output: "step 1" }, times: 2 });
    const finished = await send(instanceId);
    expect(await invocation(finished, instanceId)).toMatchObject({
      Status: "InProgress",
      StandardOutputContent: "step 1",
    });
    aws.finishCommand(finished, instanceId, { status: "Success", output: "done" });
    expect(await invocation(finished, instanceId)).toMatchObject({
      Status: "Success",
      StandardOutputContent: "done",
    });

    const stuck = await send(instanceId, "60");
    clock.advance(59_000);
    expect((await invocation(stuck, instanceId)).Status).toBe("InProgress");
    clock.advance(1_000);
    expect(await invocation(stuck, instanceId)).toMatchObject({
      Status: "TimedOut",
      StatusDetails: "ExecutionTimedOut",
    });
  });

  it("cancels a command still running; refuses an unknown command id", async () => {
    const instanceId = await launch();
    aws.scriptCommand({ instanceId, outcome: { status: "InProgress" } });
    const commandId = await send(instanceId);
    await ssm.send(new CancelCommandCommand({ CommandId: commandId, InstanceIds: [instanceId] }));
    expect((await invocation(commandId, instanceId)).Status).toBe("Cancelled");
    expect(
      await failureOf(
        ssm.send(new CancelCommandCommand({ CommandId: "00000000-0000-0000-0000-000000000000" })),
      ),
    ).toMatchObject({ name: "InvalidCommandId", status: 400 });
  });

  it("refuses a command for an instance that is not running, as AWS does", async () => {
    const instanceId = await launch();
    const ec2 = ec2Client(aws.endpoint);
    await ec2.send(new StopInstancesCommand({ InstanceIds: [instanceId] }));
    ec2.destroy();
    const before = aws.sentCommands().length;
    expect(await failureOf(send(instanceId))).toMatchObject({ name: "InvalidInstanceId", status: 400 });
    expect(await failureOf(send("i-0123456789abcdef0"))).toMatchObject({ name: "InvalidInstanceId" });
    expect(aws.sentCommands()).toHaveLength(before);
  });
});

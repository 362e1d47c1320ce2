import { Agent, request } from "node:http";
import { DescribeVpcsCommand, type EC2Client, RunInstancesCommand } from "@aws-sdk/client-ec2";
import {
  CreateSecretCommand,
  DescribeSecretCommand,
  type SecretsManagerClient,
} from "@aws-sdk/client-secrets-manager";
import { GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type AwsEmulator, startAwsEmulator } from "./emulator.ts";
import type { FaultAction } from "./faults.ts";
import {
  ec2Client,
  failureOf,
  motoInstances,
  newRun,
  runTags,
  secretsClient,
  TEST_AMI,
  TEST_REGION,
} from "./testing.ts";

let aws: AwsEmulator;
let ec2: EC2Client;
let secrets: SecretsManagerClient;
const sleeps: number[] = [];

beforeAll(async () => {
  aws = await startAwsEmulator({
    sleep: async (ms) => {
      sleeps.push(ms);
    },
  });
  ec2 = ec2Client(aws.endpoint);
  secrets = secretsClient(aws.endpoint);
});
afterAll(async () => {
  ec2?.destroy();
  secrets?.destroy();
  await aws?.close();
});
beforeEach(() => {
  aws.clearFaults();
  aws.resetCounts();
  sleeps.length = 0;
});

function runInstance(client: EC2Client, run: string) {
  return client.send(
    new RunInstancesCommand({ ImageId: TEST_AMI, MinCount: 1, MaxCount: 1, TagSpecifications: runTags(run) }),
  );
}

/** Whether moto holds the secret, asked directly. */
async function motoHasSecret(name: string): Promise<boolean> {
  const direct = secretsClient(aws.motoEndpoint);
  try {
    await direct.send(new DescribeSecretCommand({ SecretId: name }));
    return true;
  } catch (error) {
    if ((error as Error).name === "ResourceNotFoundException") return false;
    throw error;
  }
}

/** Each fault as the SDK sees it on EC2 and on a JSON API, and whether the call was applied in moto. */
const ERROR_FAULTS: [string, FaultAction, { ec2: [string, number]; json: [string, number] }][] = [
  [
    "throttling",
    { kind: "throttle" },
    { ec2: ["RequestLimitExceeded", 503], json: ["ThrottlingException", 400] },
  ],
  [
    "an internal error",
    { kind: "internal-error" },
    { ec2: ["InternalError", 500], json: ["InternalFailure", 500] },
  ],
  [
    "unavailability",
    { kind: "unavailable" },
    { ec2: ["Unavailable", 503], json: ["ServiceUnavailable", 503] },
  ],
  [
    "a chosen error",
    { kind: "error", status: 500, code: "InsufficientInstanceCapacity", message: "no capacity" },
    { ec2: ["InsufficientInstanceCapacity", 500], json: ["InsufficientInstanceCapacity", 500] },
  ],
];

describe.each(ERROR_FAULTS)("%s", (_label, fault, expected) => {
  it("answers RunInstances with EC2's error and starts nothing", async () => {
    const run = newRun();
    aws.inject({ action: "RunInstances", ...fault });
    const [name, status] = expected.ec2;
    expect(await failureOf(runInstance(ec2, run))).toEqual({ name, status });
    expect(aws.pendingFaults()).toBe(0);
    expect(await motoInstances(aws.motoEndpoint, run)).toEqual([]);
    expect(aws.counts()).toEqual({ RunInstances: 1 });
  });

  it("answers secretsmanager.CreateSecret with the JSON error and creates nothing", async () => {
    const name = `${newRun()}-secret`;
    aws.inject({ action: "secretsmanager.CreateSecret", ...fault });
    const [code, status] = expected.json;
    expect(await failureOf(secrets.send(new CreateSecretCommand({ Name: name, SecretString: "s" })))).toEqual(
      {
        name: code,
        status,
      },
    );
    expect(await motoHasSecret(name)).toBe(false);
    expect(aws.counts()).toEqual({ "secretsmanager.CreateSecret": 1 });
  });
});

describe("dropped connections", () => {
  it("drop-before: the SDK sees a network error and moto never got the call", async () => {
    const run = newRun();
    aws.inject({ action: "RunInstances", kind: "drop-before" });
    const failure = await failureOf(runInstance(ec2, run));
    expect(failure.status).toBeUndefined();
    expect(await motoInstances(aws.motoEndpoint, run)).toEqual([]);

    const name = `${run}-secret`;
    aws.inject({ action: "secretsmanager.CreateSecret", kind: "drop-before" });
    await failureOf(secrets.send(new CreateSecretCommand({ Name: name, SecretString: "s" })));
    expect(await motoHasSecret(name)).toBe(false);
  });

  it("drop-after: the SDK sees a network error and moto applied the call", async () => {
    const run = newRun();
    aws.inject({ action: "RunInstances", kind: "drop-after" });
    const failure = await failureOf(runInstance(ec2, run));
    expect(failure.status).toBeUndefined();
    expect(await motoInstances(aws.motoEndpoint, run)).toHaveLength(1);

    const name = `${run}-secret`;
    aws.inject({ action: "secretsmanager.CreateSecret", kind: "drop-after" });
    await failureOf(secrets.send(new CreateSecretCommand({ Name: name, SecretString: "s" })));
    expect(await motoHasSecret(name)).toBe(true);
  });

  it("drop-after on RunInstances: the SDK's retry reuses its client token, so one instance runs", async () => {
    const run = newRun();
    const retrying = ec2Client(aws.endpoint, 3);
    try {
      aws.inject({ action: "RunInstances", kind: "drop-after" });
      const out = await runInstance(retrying, run);
      const instances = await motoInstances(aws.motoEndpoint, run);
      expect(instances.map((i) => i.id)).toEqual([out.Instances?.[0]?.InstanceId]);
      expect(aws.counts()).toEqual({ RunInstances: 2 });
    } finally {
      retrying.destroy();
    }
  });
});

describe("retries and controls", () => {
  it("a retrying SDK gets through `times` throttles", async () => {
    const run = newRun();
    const retrying = ec2Client(aws.endpoint, 3);
    try {
      aws.inject({ action: "RunInstances", kind: "throttle", times: 2 });
      await runInstance(retrying, run);
      expect(aws.pendingFaults()).toBe(0);
      expect(aws.counts()).toEqual({ RunInstances: 3 });
      expect(await motoInstances(aws.motoEndpoint, run)).toHaveLength(1);
    } finally {
      retrying.destroy();
    }
  });

  it("slow: waits with the injected sleep, then answers normally", async () => {
    aws.inject({ action: "DescribeVpcs", kind: "slow", delayMs: 250 });
    const out = await ec2.send(new DescribeVpcsCommand({}));
    expect(out.Vpcs?.length).toBeGreaterThan(0);
    expect(sleeps).toEqual([250]);
  });

  it("`*` with a predicate hits only the calls it matches; clearFaults disarms", async () => {
    aws.inject({
      action: "*",
      kind: "throttle",
      times: 5,
      when: (call) => call.action === "sts.GetCallerIdentity",
    });
    await ec2.send(new DescribeVpcsCommand({}));
    expect(aws.pendingFaults()).toBe(5);

    const sts = new STSClient({
      endpoint: aws.endpoint,
      region: TEST_REGION,
      credentials: { accessKeyId: "test", secretAccessKey: "test" },
      maxAttempts: 1,
    });
    try {
      expect(await failureOf(sts.send(new GetCallerIdentityCommand({})))).toEqual({
        name: "Throttling",
        status: 400,
      });
      expect(aws.pendingFaults()).toBe(4);
      aws.clearFaults();
      const me = await sts.send(new GetCallerIdentityCommand({}));
      expect(me.Account).toMatch(/^\d{12}$/);
    } finally {
      sts.destroy();
    }
    expect(aws.counts()).toEqual({ DescribeVpcs: 1, "sts.GetCallerIdentity": 2 });
    expect(aws.motoTimeMs()).toBeGreaterThan(0);
    expect(aws.handlingTimeMs()).toBeGreaterThanOrEqual(aws.motoTimeMs());
    aws.resetCounts();
    expect(aws.counts()).toEqual({});
    expect(aws.motoTimeMs()).toBe(0);
    expect(aws.handlingTimeMs()).toBe(0);
  });
});

describe("connections", () => {
  it("keeps an idle keep-alive connection open past Node's 5 s default (its close raced the SDK's next call), as AWS does", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const call = () =>
      new Promise<boolean>((resolve, reject) => {
        const req = request(`${aws.endpoint}/`, { method: "POST", agent }, (res) => {
          res.resume();
          res.on("end", () => resolve(req.reusedSocket));
        });
        req.on("error", reject);
        req.end("Action=DescribeRegions&Version=2016-11-15");
      });
    try {
      expect(await call()).toBe(false);
      await new Promise((resolve) => setTimeout(resolve, 7_000));
      expect(await call()).toBe(true);
    } finally {
      agent.destroy();
    }
  });
});

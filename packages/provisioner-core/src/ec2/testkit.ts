/**
 * Test wiring: AWS on loopback (moto) with the network an EC2 deployment has (a VPC and subnet, the EC2 Instance
 * Connect endpoint's security group, an org tenant's security group, an instance profile). Kept out of the package's
 * exports; tests import it by path.
 */
import {
  CreateSecurityGroupCommand,
  CreateSubnetCommand,
  CreateVpcCommand,
  DescribeImagesCommand,
} from "@aws-sdk/client-ec2";
import { CreateInstanceProfileCommand, IAMClient } from "@aws-sdk/client-iam";
import { type AwsEmulator, type MotoServer, startAwsEmulator, startMoto } from "@molecule/aws-emulator";
import type { WorkspaceSpec } from "../provisioner.ts";
import { AwsAccess, type AwsAccessOptions } from "./aws.ts";
import { createEc2Provisioner, type Ec2Provisioner, type Ec2ProvisionerOptions } from "./provisioner.ts";
import type { Ec2Scope } from "./tags.ts";

export const TEST_REGION = "us-east-1";
export const TEST_CREDENTIALS = { accessKeyId: "testing", secretAccessKey: "testing" };
export const TEST_SCOPE: Ec2Scope = { deployment: "test-deployment", environment: "test" };
export const TEST_ORG = "org_01jec2test0000000000000000";

/** The network and identity an EC2 deployment is given by its operator. */
export interface AwsNetwork {
  vpcId: string;
  subnetId: string;
  /** The EC2 Instance Connect endpoint's group (the SSH source). */
  eicGroupId: string;
  /** A group standing for an org's tenant VM (the agent port's source). */
  tenantGroupId: string;
  instanceProfile: string;
  imageId: string;
}

/** Creates the VPC, subnet, groups and instance profile (unique names per call). */
export async function createNetwork(endpoint: string, name: string): Promise<AwsNetwork> {
  const access = new AwsAccess({ region: TEST_REGION, endpoint, credentials: TEST_CREDENTIALS });
  const iam = new IAMClient({ region: TEST_REGION, endpoint, credentials: TEST_CREDENTIALS });
  try {
    const ec2 = access.ec2;
    const vpc = await ec2.send(new CreateVpcCommand({ CidrBlock: "10.20.0.0/16" }));
    const vpcId = vpc.Vpc?.VpcId ?? "";
    const subnet = await ec2.send(new CreateSubnetCommand({ VpcId: vpcId, CidrBlock: "10.20.1.0/24" }));
    const group = async (groupName: string) =>
      (
        await ec2.send(
          new CreateSecurityGroupCommand({
            GroupName: `${name}-${groupName}`,
            Description: groupName,
            VpcId: vpcId,
          }),
        )
      ).GroupId ?? "";
    const eicGroupId = await group("eic-endpoint");
    const tenantGroupId = await group("tenant");
    const profile = await iam.send(
      new CreateInstanceProfileCommand({ InstanceProfileName: `${name}-profile` }),
    );
    const images = await ec2.send(new DescribeImagesCommand({ Owners: ["amazon"] }));
    return {
      vpcId,
      subnetId: subnet.Subnet?.SubnetId ?? "",
      eicGroupId,
      tenantGroupId,
      instanceProfile: profile.InstanceProfile?.InstanceProfileName ?? "",
      imageId: images.Images?.[0]?.ImageId ?? "",
    };
  } finally {
    access.destroy();
    iam.destroy();
  }
}

export interface AwsTestAccess {
  access: AwsAccess;
  /** Delays the code asked for (each is recorded, then shortened to at most 2 ms). */
  sleeps: number[];
}

/** An AwsAccess to `endpoint` with tiny sleeps and a small retry budget. */
export function testAccess(endpoint: string, options: Partial<AwsAccessOptions> = {}): AwsTestAccess {
  const sleeps: number[] = [];
  const access = new AwsAccess({
    region: TEST_REGION,
    endpoint,
    credentials: TEST_CREDENTIALS,
    requestTimeoutMs: 5_000,
    retry: { maxAttempts: 5, baseDelayMs: 2, maxDelayMs: 20, maxElapsedMs: 10_000 },
    sleep: (ms) => {
      sleeps.push(ms);
      return new Promise((resolve) => setTimeout(resolve, Math.min(ms, 2)));
    },
    ...options,
  });
  return { access, sleeps };
}

/**
 * A clock the tests move instead of waiting: every sleep the code under test asks for is recorded and advances it
 * at once. The emulator's timing (the NotFound window, the shutting-down period) follows the same clock.
 */
export class TestClock {
  private at = Date.UTC(2026, 0, 1);
  readonly sleeps: number[] = [];
  readonly now = (): number => this.at;
  readonly sleep = async (ms: number): Promise<void> => {
    this.sleeps.push(ms);
    this.at += ms;
    await new Promise((resolve) => setImmediate(resolve));
  };
}

export interface Ec2Harness {
  /** The fault and fidelity proxy in front of moto: the provisioner's endpoint. */
  emulator: AwsEmulator;
  net: AwsNetwork;
  provisioner: Ec2Provisioner;
  clock: TestClock;
  /** An AwsAccess to the proxy on its own (for looking at the world; faults apply to it too). */
  inspect: AwsAccess;
  makeSpec(overrides?: Partial<WorkspaceSpec>): WorkspaceSpec;
  close(): Promise<void>;
}

export const TEST_BOOT_TOKEN = "boot-secret-token-value";

let seq = 0;

/** The emulator (proxy and moto), a network made directly in moto, and the EC2 workspace provisioner on the proxy. */
export async function startEc2Harness(
  options: { provisioner?: Partial<Ec2ProvisionerOptions>; access?: Partial<AwsAccessOptions> } = {},
): Promise<Ec2Harness> {
  const clock = new TestClock();
  const emulator = await startAwsEmulator({ now: clock.now });
  const net = await createNetwork(emulator.motoEndpoint, "harness");
  const { access } = testAccess(emulator.endpoint, { clock, sleep: clock.sleep, ...options.access });
  const inspect = new AwsAccess({
    region: TEST_REGION,
    endpoint: emulator.endpoint,
    credentials: TEST_CREDENTIALS,
  });
  const provisioner = createEc2Provisioner({
    ...testProvisionerOptions(net, access),
    ...options.provisioner,
  });
  return {
    emulator,
    net,
    provisioner,
    clock,
    inspect,
    makeSpec: makeWorkspaceSpec,
    async close() {
      access.destroy();
      inspect.destroy();
      await emulator.close();
    },
  };
}

export function testProvisionerOptions(net: AwsNetwork, access: AwsAccess): Ec2ProvisionerOptions {
  return {
    access,
    region: TEST_REGION,
    deployment: TEST_SCOPE.deployment,
    environment: TEST_SCOPE.environment,
    imageId: net.imageId,
    subnetId: net.subnetId,
    vpcId: net.vpcId,
    eicSecurityGroupId: net.eicGroupId,
    instanceProfile: net.instanceProfile,
    agentSourceGroupId: net.tenantGroupId,
    imagePrefix: "ghcr.io/molecule/workspace-",
    imageTag: "test",
    waitDeadlineMs: 10_000,
    terminateDeadlineMs: 10_000,
  };
}

/** A valid workspace spec with a boot token and a secret, unique per call. */
export function makeWorkspaceSpec(overrides: Partial<WorkspaceSpec> = {}): WorkspaceSpec {
  seq += 1;
  const workspaceId = overrides.workspaceId ?? `ws_01jec2spec00000000000${String(seq).padStart(5, "0")}`;
  return {
    workspaceId,
    orgId: TEST_ORG,
    deployment: TEST_SCOPE.deployment,
    runtime: "hermes",
    tier: 3,
    env: {
      WORKSPACE_ID: workspaceId,
      WORKSPACE_BOOT_TOKEN: TEST_BOOT_TOKEN,
      OPENAI_API_KEY: "sk-test-secret-api-key",
    },
    secretKeys: ["WORKSPACE_BOOT_TOKEN", "OPENAI_API_KEY"],
    metadata: {},
    ...overrides,
  };
}

export { type MotoServer, startMoto };

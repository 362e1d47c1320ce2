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
import { type MotoServer, startMoto } from "@molecule/aws-emulator";
import { AwsAccess, type AwsAccessOptions } from "./aws.ts";
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

export { type MotoServer, startMoto };

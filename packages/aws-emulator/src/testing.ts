import { DescribeInstancesCommand, EC2Client } from "@aws-sdk/client-ec2";
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";

/** What this package's tests share: SDK clients for an endpoint, a clock they move, moto's own view. */

export const TEST_REGION = "us-east-1";
const credentials = { accessKeyId: "test", secretAccessKey: "test" };

/** `maxAttempts: 1` shows each answer as it came; the SDK's default (3) retries as it would against AWS. */
export function ec2Client(endpoint: string, maxAttempts = 1, region = TEST_REGION): EC2Client {
  return new EC2Client({ endpoint, region, credentials, maxAttempts });
}

export function secretsClient(endpoint: string, maxAttempts = 1): SecretsManagerClient {
  return new SecretsManagerClient({ endpoint, region: TEST_REGION, credentials, maxAttempts });
}

export class ManualClock {
  private at = Date.UTC(2026, 0, 1);
  readonly now = (): number => this.at;
  advance(ms: number): void {
    this.at += ms;
  }
}

/** Instances tagged `test-run=<run>` as moto itself holds them (asked directly, not through the proxy). */
export async function motoInstances(
  motoEndpoint: string,
  run: string,
): Promise<{ id: string; state: string }[]> {
  const ec2 = ec2Client(motoEndpoint);
  try {
    const out = await ec2.send(
      new DescribeInstancesCommand({ Filters: [{ Name: "tag:test-run", Values: [run] }] }),
    );
    return (out.Reservations ?? []).flatMap((r) =>
      (r.Instances ?? []).map((i) => ({ id: i.InstanceId ?? "", state: i.State?.Name ?? "" })),
    );
  } finally {
    ec2.destroy();
  }
}

let runSeq = 0;
/** A tag value no other test uses, so each test counts only its own instances. */
export function newRun(): string {
  runSeq += 1;
  return `run-${process.pid}-${runSeq}`;
}

export function runTags(run: string) {
  return [{ ResourceType: "instance" as const, Tags: [{ Key: "test-run", Value: run }] }];
}

export const TEST_AMI = "ami-12c6146b";

/** The SDK error's AWS code and HTTP status. */
export async function failureOf(promise: Promise<unknown>): Promise<{ name: string; status?: number }> {
  try {
    await promise;
  } catch (error) {
    const e = error as { name: string; $metadata?: { httpStatusCode?: number } };
    return { name: e.name, status: e.$metadata?.httpStatusCode };
  }
  throw new Error("expected the call to fail");
}

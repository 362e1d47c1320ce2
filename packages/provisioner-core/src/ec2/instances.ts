/**
 * EC2 instances of one owner: find by tags, launch exactly once, wait for a state under a deadline, stop, start,
 * terminate and poll until `terminated`.
 *
 * Exactly once: RunInstances carries a ClientToken that is the same on every retry of the same operation (AWS answers
 * a replay with the instance the first call made), and a retry first looks the instance up by its tags, so a lost
 * answer never makes a second VM. Right after a create AWS may still answer `InvalidInstanceID.NotFound` for the new
 * id (eventual consistency): waits tolerate that within their deadline.
 */
import { createHash, randomUUID } from "node:crypto";
import {
  DescribeInstancesCommand,
  type Filter,
  type Instance,
  RunInstancesCommand,
  type RunInstancesCommandInput,
  StartInstancesCommand,
  StopInstancesCommand,
  TerminateInstancesCommand,
} from "@aws-sdk/client-ec2";
import { backoffDelay } from "@molecule/contracts";
import { ProvisionerError } from "../errors.ts";
import { type AwsAccess, isAwsError, NOT_YET_VISIBLE } from "./aws.ts";
import { type Ec2Scope, isOwnedBy, ownerFilters, ownerTags, tagMap, type VmOwner } from "./tags.ts";

export type InstanceState = "pending" | "running" | "shutting-down" | "terminated" | "stopping" | "stopped";

/** What the backends need of an instance. */
export interface Ec2Instance {
  id: string;
  state: string;
  privateIp?: string;
  instanceType?: string;
  launchTime?: number;
  tags: Record<string, string>;
  /** AWS's reason code for the last state change (`Client.UserInitiatedHibernate` after a hibernate). */
  stateReason?: string;
  hibernationConfigured: boolean;
}

/** States in which an instance is (still) the owner's VM; `shutting-down` and `terminated` are on their way out. */
export const LIVE_INSTANCE_STATES: readonly InstanceState[] = ["pending", "running", "stopping", "stopped"];

const INSTANCE_ID = /^i-[0-9a-f]{8,17}$/;

export function toInstance(raw: Instance): Ec2Instance {
  return {
    id: raw.InstanceId ?? "",
    state: raw.State?.Name ?? "unknown",
    privateIp: raw.PrivateIpAddress,
    instanceType: raw.InstanceType,
    launchTime: raw.LaunchTime ? new Date(raw.LaunchTime).getTime() : undefined,
    tags: tagMap(raw.Tags),
    stateReason: raw.StateReason?.Code,
    hibernationConfigured: raw.HibernationOptions?.Configured === true,
  };
}

/**
 * The ClientToken of one create: the same for every retry of the same operation (`operationKey`, e.g. the caller's
 * operation id), different for another owner or operation. At most 64 ASCII characters, as EC2 requires. Without an
 * operation key, a random one: retries inside this call still share it.
 */
export function clientToken(ownerKey: string, operationKey: string | undefined, generation = 0): string {
  const key = operationKey ?? randomUUID();
  const digest = createHash("sha256").update(`${ownerKey}\0${key}\0${generation}`).digest("hex");
  return `molecule-${digest.slice(0, 48)}`;
}

/** Every instance matching `filters`, across pages. */
export async function describeInstances(aws: AwsAccess, filters: Filter[]): Promise<Ec2Instance[]> {
  const out: Ec2Instance[] = [];
  let nextToken: string | undefined;
  do {
    const token = nextToken;
    const reply = await aws.call("EC2", "DescribeInstances", (abortSignal) =>
      aws.ec2.send(
        new DescribeInstancesCommand({
          Filters: filters,
          ...(token ? { NextToken: token, MaxResults: 1000 } : {}),
        }),
        { abortSignal },
      ),
    );
    for (const reservation of reply.Reservations ?? []) {
      for (const raw of reservation.Instances ?? []) out.push(toInstance(raw));
    }
    nextToken = reply.NextToken;
  } while (nextToken);
  return out;
}

/** The owner's live instances (not `shutting-down`, not `terminated`), oldest first. */
export async function findInstances(aws: AwsAccess, scope: Ec2Scope, owner: VmOwner): Promise<Ec2Instance[]> {
  const found = await describeInstances(aws, [
    ...ownerFilters(scope, owner),
    { Name: "instance-state-name", Values: [...LIVE_INSTANCE_STATES] },
  ]);
  return found
    .filter(
      (i) => isOwnedBy(i.tags, scope, owner) && (LIVE_INSTANCE_STATES as readonly string[]).includes(i.state),
    )
    .sort((a, b) => (a.launchTime ?? 0) - (b.launchTime ?? 0) || a.id.localeCompare(b.id));
}

/** Every instance of the owner that is not `terminated` yet: the live ones and those still shutting down. */
export async function findUnterminatedInstances(
  aws: AwsAccess,
  scope: Ec2Scope,
  owner: VmOwner,
): Promise<Ec2Instance[]> {
  return (
    await describeInstances(aws, [
      ...ownerFilters(scope, owner),
      { Name: "instance-state-name", Values: [...LIVE_INSTANCE_STATES, "shutting-down"] },
    ])
  ).filter((i) => isOwnedBy(i.tags, scope, owner) && i.state !== "terminated");
}

/** One instance by id, or null when AWS does not know it (`InvalidInstanceID.NotFound`). */
export async function getInstance(aws: AwsAccess, instanceId: string): Promise<Ec2Instance | null> {
  if (!INSTANCE_ID.test(instanceId)) return null;
  try {
    const reply = await aws.call("EC2", "DescribeInstances", (abortSignal) =>
      aws.ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }), { abortSignal }),
    );
    const raw = reply.Reservations?.[0]?.Instances?.[0];
    return raw ? toInstance(raw) : null;
  } catch (error) {
    if (isAwsError(error, "InvalidInstanceID.NotFound")) return null;
    throw error;
  }
}

export interface LaunchSpec {
  scope: Ec2Scope;
  owner: VmOwner;
  /** The same on every retry of the same operation (`clientToken`). */
  clientToken: string;
  imageId: string;
  instanceType: string;
  subnetId: string;
  securityGroupIds: readonly string[];
  /** Name or ARN of the IAM instance profile (required: the VM reads its bundle with it). */
  instanceProfile: string;
  keyName?: string;
  rootVolumeGb: number;
  /** The AMI's root device (default `/dev/xvda`, Amazon Linux). */
  rootDeviceName?: string;
  /** Base64 user-data (renderUserData). */
  userData: string;
  /** Launch with hibernation configured (StopInstances Hibernate=true then suspends). */
  hibernation?: boolean;
}

const INSTANCE_PROFILE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:instance-profile\/.+$/;

function runInstancesInput(spec: LaunchSpec): RunInstancesCommandInput {
  const tags = ownerTags(spec.scope, spec.owner);
  return {
    ImageId: spec.imageId,
    InstanceType: spec.instanceType as RunInstancesCommandInput["InstanceType"],
    MinCount: 1,
    MaxCount: 1,
    ClientToken: spec.clientToken,
    SubnetId: spec.subnetId,
    SecurityGroupIds: [...spec.securityGroupIds],
    IamInstanceProfile: INSTANCE_PROFILE_ARN.test(spec.instanceProfile)
      ? { Arn: spec.instanceProfile }
      : { Name: spec.instanceProfile },
    ...(spec.keyName ? { KeyName: spec.keyName } : {}),
    BlockDeviceMappings: [
      {
        DeviceName: spec.rootDeviceName ?? "/dev/xvda",
        Ebs: { VolumeSize: spec.rootVolumeGb, VolumeType: "gp3", DeleteOnTermination: true, Encrypted: true },
      },
    ],
    // IMDSv2 only, one hop: the boot script on the host reads metadata; a container on the VM cannot reach it, so
    // the agent never sees the instance profile's credentials.
    MetadataOptions: { HttpTokens: "required", HttpEndpoint: "enabled", HttpPutResponseHopLimit: 1 },
    ...(spec.hibernation ? { HibernationOptions: { Configured: true } } : {}),
    UserData: spec.userData,
    TagSpecifications: [
      { ResourceType: "instance", Tags: tags },
      { ResourceType: "volume", Tags: tags },
    ],
  };
}

/**
 * Launches the owner's instance, or returns the live one a lost answer or a concurrent call already made. Transient
 * failures are retried under the access's policy with the same ClientToken; each retry first looks by tags.
 */
export async function launchInstance(
  aws: AwsAccess,
  spec: LaunchSpec,
): Promise<{ instance: Ec2Instance; created: boolean }> {
  if (!Number.isInteger(spec.rootVolumeGb) || spec.rootVolumeGb < 1) {
    throw new ProvisionerError(
      "invalid_spec",
      "ec2: the root volume size must be a whole number of GB",
      false,
    );
  }
  let input = runInstancesInput(spec);
  const backoff = aws.backoff();
  for (let attempt = 1, generation = 0; ; attempt++) {
    if (attempt > 1) {
      const [found] = await findInstances(aws, spec.scope, spec.owner);
      if (found) return { instance: found, created: false };
    }
    try {
      const reply = await aws.call(
        "EC2",
        "RunInstances",
        (abortSignal) => aws.ec2.send(new RunInstancesCommand(input), { abortSignal }),
        { retry: false },
      );
      const raw = reply.Instances?.[0];
      if (!raw?.InstanceId) {
        throw new ProvisionerError("backend_error", "AWS EC2 RunInstances answered no instance", true);
      }
      const instance = toInstance(raw);
      if (instance.state !== "shutting-down" && instance.state !== "terminated")
        return { instance, created: true };
      // AWS replayed the token of an earlier attempt whose instance has been terminated since (no live instance was
      // found by tags): this operation still needs a VM, so the next send carries a token of its own.
      generation += 1;
      if (generation > 3) {
        throw new ProvisionerError(
          "conflict",
          `the instances this operation launched were terminated`,
          true,
          {
            instanceId: instance.id,
          },
        );
      }
      input = { ...input, ClientToken: clientToken(spec.clientToken, "replaced", generation) };
    } catch (error) {
      await aws.pauseOrThrow(backoff, error, NOT_YET_VISIBLE);
    }
  }
}

export interface WaitOptions {
  /** Clock value by which the state must be reached. */
  deadline: number;
  /** Tolerate `InvalidInstanceID.NotFound` (the instance was just created). */
  justCreated?: boolean;
}

/** Polls every 200 ms doubling to 5 s, no jitter (the deadline bounds it). */
const STATE_POLL = { baseMs: 200, maxMs: 5_000, jitter: "none" as const };

/**
 * Polls until the instance is in `want`. Fails with a retryable `timeout` at the deadline (naming the state it is
 * stuck in), or with `not_found` when it disappeared (unless just created, or waiting for `terminated`).
 */
export async function waitForState(
  aws: AwsAccess,
  instanceId: string,
  want: InstanceState,
  options: WaitOptions,
): Promise<Ec2Instance | null> {
  for (let tries = 1; ; tries += 1) {
    const instance = await getInstance(aws, instanceId);
    if (!instance && want === "terminated") return null;
    if (instance?.state === want) return instance;
    if (!instance && !options.justCreated) {
      throw new ProvisionerError(
        "not_found",
        `instance ${instanceId} disappeared while waiting for ${want}`,
        false,
        {
          instanceId,
        },
      );
    }
    if (
      instance &&
      want !== "terminated" &&
      (instance.state === "shutting-down" || instance.state === "terminated")
    ) {
      throw new ProvisionerError(
        "conflict",
        `instance ${instanceId} is ${instance.state}, not ${want}`,
        true,
        {
          instanceId,
          state: instance.state,
        },
      );
    }
    const wait = backoffDelay(tries, STATE_POLL);
    if (aws.now() + wait > options.deadline) {
      const now = instance ? instance.state : "not visible yet";
      throw new ProvisionerError(
        "timeout",
        `instance ${instanceId} did not reach ${want} by the deadline (it is ${now}); retry later`,
        true,
        { instanceId, state: instance?.state },
      );
    }
    await aws.pause(wait);
  }
}

/** Starts a stopped instance (waiting out a `stopping` one first) and waits for `running`. */
export async function startInstance(
  aws: AwsAccess,
  instance: Ec2Instance,
  deadline: number,
): Promise<Ec2Instance> {
  if (instance.state === "running") return instance;
  if (instance.state === "stopping") await waitForState(aws, instance.id, "stopped", { deadline });
  if (instance.state !== "pending") {
    try {
      await aws.call("EC2", "StartInstances", (abortSignal) =>
        aws.ec2.send(new StartInstancesCommand({ InstanceIds: [instance.id] }), { abortSignal }),
      );
    } catch (error) {
      // A retry of a start that was applied sees the instance pending or running: the wait below settles it.
      if (!isAwsError(error, "IncorrectInstanceState")) throw error;
    }
  }
  return (await waitForState(aws, instance.id, "running", { deadline })) as Ec2Instance;
}

/** Stops (or hibernates) the instance and waits for `stopped`. */
export async function stopInstance(
  aws: AwsAccess,
  instance: Ec2Instance,
  deadline: number,
  options: { hibernate?: boolean } = {},
): Promise<void> {
  if (instance.state === "stopped") return;
  if (instance.state === "pending")
    await waitForState(aws, instance.id, "running", { deadline, justCreated: true });
  if (instance.state !== "stopping") {
    try {
      await aws.call("EC2", "StopInstances", (abortSignal) =>
        aws.ec2.send(
          new StopInstancesCommand({
            InstanceIds: [instance.id],
            ...(options.hibernate ? { Hibernate: true } : {}),
          }),
          { abortSignal },
        ),
      );
    } catch (error) {
      if (!isAwsError(error, "IncorrectInstanceState")) throw error;
    }
  }
  await waitForState(aws, instance.id, "stopped", { deadline });
}

/**
 * Terminates the instance and polls until it is `terminated` (or gone) by `deadline`. A `shutting-down` that outlasts
 * the deadline fails retryably, naming the instance: it never leaks silently.
 */
export async function terminateInstance(aws: AwsAccess, instanceId: string, deadline: number): Promise<void> {
  try {
    await aws.call("EC2", "TerminateInstances", (abortSignal) =>
      aws.ec2.send(new TerminateInstancesCommand({ InstanceIds: [instanceId] }), { abortSignal }),
    );
  } catch (error) {
    if (isAwsError(error, "InvalidInstanceID.NotFound")) return;
    throw error;
  }
  try {
    await waitForState(aws, instanceId, "terminated", { deadline });
  } catch (error) {
    if (error instanceof ProvisionerError && error.code === "timeout") {
      throw new ProvisionerError(
        "timeout",
        `instance ${instanceId} is still ${String(error.details.state ?? "shutting down")} at the terminate deadline; ` +
          "the destroy is retried later, and its security group and secret are kept until the instance is gone",
        true,
        { instanceId, state: error.details.state },
      );
    }
    throw error;
  }
}

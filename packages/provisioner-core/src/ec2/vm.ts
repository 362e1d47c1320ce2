/**
 * One VM per owner on EC2, the machinery both EC2 roles share: the workspace provisioner (Role=workspace, one VM per
 * workspace) and the control plane's tenant backend (Role=tenant, one VM per org's tenant platform).
 *
 *   const vms = new Ec2Vms({ aws, scope, imageId, subnetId, vpcId, sshSourceGroupId, instanceProfile, ... });
 *   const vm = await vms.ensure({ owner, image, env, instanceType, rootVolumeGb, servicePort, ... }, hint, ctx);
 *   await vms.stop(owner, hint); await vms.start(owner, hint); await vms.destroy(owner, hint);
 *
 * What a VM is: a security group (its own in a VPC; the shared one otherwise), a bootstrap bundle secret (the env,
 * read at boot with the instance profile) and an instance (tagged, as are its volumes). Every step is idempotent and
 * looks for what an earlier attempt made before making anything; every wait has a deadline and fails retryably when it
 * passes. Nothing here logs or reports an env value.
 */

import { DescribeSecurityGroupsCommand } from "@aws-sdk/client-ec2";
import { ListSecretsCommand } from "@aws-sdk/client-secrets-manager";
import { ProvisionerError } from "../errors.ts";
import {
  auditedCreate,
  type ManagedResource,
  type ResourceAudit,
  type StepReporter,
} from "../provisioner.ts";
import type { AwsAccess, AwsLogger } from "./aws.ts";
import {
  type BootstrapBundle,
  bindBundleToInstance,
  bundleSecretName,
  deleteBootstrapBundle,
  findBootstrapBundle,
  putBootstrapBundle,
  type RegistryLogin,
  redeployScript,
  renderUserData,
  requireInstanceProfile,
} from "./bootstrap.ts";
import { runShellCommand, type ShellCommandResult } from "./commands.ts";
import {
  clientToken,
  describeInstances,
  type Ec2Instance,
  findInstances,
  findUnterminatedInstances,
  getInstance,
  launchInstance,
  startInstance,
  stopInstance,
  terminateInstance,
  waitForState,
} from "./instances.ts";
import { deleteSecurityGroup, ensureSecurityGroup, findSecurityGroups } from "./security-group.ts";
import {
  assertOwner,
  assertScope,
  EC2_TAGS,
  type Ec2Scope,
  inScope,
  isOwnedBy,
  ownerName,
  scopedName,
  scopeFilters,
  tagMap,
  type VmOwner,
  type VmRole,
} from "./tags.ts";

export interface Ec2VmOptions {
  aws: AwsAccess;
  /** MOLECULE_DEPLOYMENT and MOLECULE_ENV: every resource is tagged with both, every lookup filters on both. */
  scope: Ec2Scope;
  /**
   * The AMI (with docker, or a package manager to install it, and the AWS CLI: Amazon Linux 2023), unless each
   * VmSpec names its own.
   */
  imageId?: string;
  subnetId: string;
  /** The VPC of the subnet: each VM gets its own security group there. Without it, `securityGroupId` is used. */
  vpcId?: string;
  /** The shared security group every VM uses when no VPC is configured. */
  securityGroupId?: string;
  /** The EC2 Instance Connect endpoint's security group: the only source of `tcp/22`. */
  sshSourceGroupId?: string;
  /** Name or ARN of the IAM instance profile that may read the bundle secrets. Required. */
  instanceProfile?: string;
  keyName?: string;
  /** The AMI's root device name (default `/dev/xvda`). */
  rootDeviceName?: string;
  /** How long to wait for running/stopped (default 10 min). */
  waitDeadlineMs?: number;
  /** EC2_TERMINATE_DEADLINE_SECONDS × 1000: how long to poll for `terminated` and retry the group delete (10 min). */
  terminateDeadlineMs?: number;
  /** Launch with hibernation configured, so `stop(…, { hibernate: true })` suspends. */
  hibernation?: boolean;
  logger?: AwsLogger;
}

/** What one VM runs. */
export interface VmSpec {
  owner: VmOwner;
  /** The container image. */
  image: string;
  /** The AMI for this VM (e.g. pinned per runtime and region); default the options' `imageId`. */
  imageId?: string;
  /** Groups the instance joins beside its own (e.g. the org's workspaces group); at launch only. */
  memberGroupIds?: readonly string[];
  /** The container's environment: only ever in the bundle secret. */
  env: Record<string, string>;
  registry?: RegistryLogin;
  instanceType: string;
  rootVolumeGb: number;
  /** The port the container serves on the VM's private address. */
  servicePort: number;
  /** The only security groups that may reach `servicePort`. */
  serviceSourceGroupIds: readonly string[];
  /** Set to `http://<private ip>:<servicePort>` at boot (AGENT_PUBLIC_URL for a workspace). */
  addressEnv?: string;
  /** Where the container's persistent data is mounted. */
  dataPath: string;
  /** The caller's operation, the same on every retry of it: the RunInstances ClientToken is derived from it. */
  operationKey?: string;
}

/** Ids a caller stores and hands back, so a later call goes straight to what exists. */
export interface VmHint {
  instanceId?: string;
}

export interface Vm {
  instance: Ec2Instance;
  /** The VM's own group (VPC), or the shared one. */
  securityGroupId: string;
  secretArn: string;
  /** The address the platform reaches the VM at. */
  privateIp: string;
}

/** What a redeploy changes: the image; the rest must be what the VM was launched with. */
export type VmRedeploySpec = Pick<VmSpec, "owner" | "image" | "servicePort" | "addressEnv" | "dataPath">;

export interface VmRedeployOptions {
  /** How long the SSM command may run. */
  deadlineMs: number;
  /** Between two looks at the command (default 2 s). */
  pollMs?: number;
}

export interface VmContext {
  step?: StepReporter;
  /** Each group, bundle and instance is recorded before its create call and claimed after (see ResourceAudit). */
  audit?: ResourceAudit;
}

export const EC2_RESOURCE_KINDS = {
  instance: "ec2_instance",
  securityGroup: "ec2_security_group",
  secret: "ec2_bootstrap_secret",
} as const;

const DEFAULT_WAIT_MS = 600_000;
const DEFAULT_TERMINATE_MS = 600_000;

export class Ec2Vms {
  readonly aws: AwsAccess;
  readonly scope: Ec2Scope;
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(readonly options: Ec2VmOptions) {
    this.aws = options.aws;
    this.scope = assertScope(options.scope);
    if (!options.subnetId) throw new ProvisionerError("invalid_spec", "ec2: subnetId is required", false);
    if (!options.vpcId && !options.securityGroupId) {
      throw new ProvisionerError("invalid_spec", "ec2: vpcId or a shared securityGroupId is required", false);
    }
    requireInstanceProfile(options.instanceProfile);
  }

  /**
   * Serialises work on one owner inside this process (a provision racing a provision adopts, never doubles); `fn`
   * runs under `signal` (AwsAccess.underSignal).
   */
  locked<T>(owner: VmOwner, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const key = scopedName(this.scope, owner);
    const previous = this.locks.get(key) ?? Promise.resolve();
    const run = () => this.aws.underSignal(signal, fn);
    const next = previous.then(run, run);
    const tail = next.catch(() => undefined);
    this.locks.set(key, tail);
    void tail.then(() => {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    });
    return next;
  }

  private deadline(ms: number | undefined, fallback: number): number {
    return this.aws.now() + (ms ?? fallback);
  }

  /**
   * Creates (or adopts) the VM and brings it to `running`: group, then bundle, then instance. An instance that
   * exists keeps its bundle (the env it booted with); a stopped one is started.
   */
  async ensure(spec: VmSpec, hint: VmHint = {}, ctx: VmContext = {}): Promise<Vm> {
    const owner = assertOwner(spec.owner);
    const name = scopedName(this.scope, owner);
    const securityGroupId = await auditedCreate(
      ctx.audit,
      EC2_RESOURCE_KINDS.securityGroup,
      name,
      () => this.ensureGroup(spec),
      (id) => id,
    );
    ctx.step?.("security_group_ready", `group_id=${securityGroupId}`);
    let instance = await this.find(owner, hint);
    let secretArn: string | null = null;
    if (instance) {
      ctx.step?.("instance_found", `instance_id=${instance.id} state=${instance.state}`);
      secretArn = await findBootstrapBundle(this.aws, this.scope, ownerName(owner));
    }
    if (!secretArn) {
      secretArn = await auditedCreate(
        ctx.audit,
        EC2_RESOURCE_KINDS.secret,
        name,
        () => this.putBundle(spec),
        (arn) => arn,
      );
      ctx.step?.("bootstrap_stored", "environment bundle in Secrets Manager");
    }
    const deadline = this.deadline(this.options.waitDeadlineMs, DEFAULT_WAIT_MS);
    if (!instance) {
      const imageId = spec.imageId ?? this.options.imageId;
      if (!imageId) throw new ProvisionerError("invalid_spec", "ec2: imageId (the AMI) is required", false);
      const launched = await auditedCreate(
        ctx.audit,
        EC2_RESOURCE_KINDS.instance,
        name,
        () =>
          launchInstance(this.aws, {
            scope: this.scope,
            owner,
            clientToken: clientToken(scopedName(this.scope, owner), spec.operationKey),
            imageId,
            instanceType: spec.instanceType,
            subnetId: this.options.subnetId,
            securityGroupIds: [securityGroupId, ...(spec.memberGroupIds ?? [])],
            instanceProfile: requireInstanceProfile(this.options.instanceProfile),
            keyName: this.options.keyName,
            rootVolumeGb: spec.rootVolumeGb,
            rootDeviceName: this.options.rootDeviceName,
            userData: renderUserData({
              secretArn,
              region: this.aws.region,
              image: spec.image,
              containerName: ownerName(owner),
              port: spec.servicePort,
              dataPath: spec.dataPath,
              addressEnv: spec.addressEnv,
            }),
            hibernation: this.options.hibernation,
          }),
        (made) => made.instance.id,
      );
      instance = launched.instance;
      ctx.step?.(launched.created ? "instance_created" : "instance_found", `instance_id=${instance.id}`);
      await bindBundleToInstance(this.aws, secretArn, instance.id);
      instance =
        (await waitForState(this.aws, instance.id, "running", { deadline, justCreated: true })) ?? instance;
    } else {
      await bindBundleToInstance(this.aws, secretArn, instance.id);
      instance = await startInstance(this.aws, instance, deadline);
    }
    ctx.step?.("instance_running", `instance_id=${instance.id}`);
    return { instance, securityGroupId, secretArn, privateIp: this.privateIp(instance) };
  }

  /** Replaces the bundle's value (a recreate: the next boot runs the container with it). */
  async putBundle(spec: Pick<VmSpec, "owner" | "env" | "registry">): Promise<string> {
    const bundle: BootstrapBundle = { env: spec.env, ...(spec.registry ? { registry: spec.registry } : {}) };
    return putBootstrapBundle(this.aws, this.scope, spec.owner, ownerName(spec.owner), bundle);
  }

  private async ensureGroup(spec: VmSpec): Promise<string> {
    if (!this.options.vpcId) return this.options.securityGroupId as string;
    return ensureSecurityGroup(this.aws, this.scope, spec.owner, this.options.vpcId, {
      sshSourceGroupId: this.options.sshSourceGroupId,
      servicePort: spec.servicePort,
      serviceSourceGroupIds: spec.serviceSourceGroupIds,
    });
  }

  /** The owner's live instance: the hinted id when it is still the owner's, else the oldest found by tags. */
  async find(owner: VmOwner, hint: VmHint = {}): Promise<Ec2Instance | null> {
    assertOwner(owner);
    if (hint.instanceId) {
      const instance = await getInstance(this.aws, hint.instanceId);
      if (
        instance &&
        isOwnedBy(instance.tags, this.scope, owner) &&
        instance.state !== "terminated" &&
        instance.state !== "shutting-down"
      ) {
        return instance;
      }
    }
    const [first] = await findInstances(this.aws, this.scope, owner);
    return first ?? null;
  }

  /** Starts the VM and waits for `running`; null when it has no instance. */
  async start(owner: VmOwner, hint: VmHint = {}, ctx: VmContext = {}): Promise<Ec2Instance | null> {
    const instance = await this.find(owner, hint);
    if (!instance) return null;
    const running = await startInstance(
      this.aws,
      instance,
      this.deadline(this.options.waitDeadlineMs, DEFAULT_WAIT_MS),
    );
    ctx.step?.("instance_running", `instance_id=${running.id}`);
    return running;
  }

  /**
   * Moves the running VM's container to `spec.image` without a reboot: an SSM Run Command (`redeployScript`)
   * installs the boot script for the new image and restarts the boot unit, which pulls it and replaces the container
   * on the same data directory; later boots run the new image too. A VM that is not running is a non-retryable
   * conflict; a command that fails or outlives `deadlineMs` fails with its output (see runShellCommand).
   */
  async redeploy(
    spec: VmRedeploySpec,
    hint: VmHint,
    options: VmRedeployOptions,
    ctx: VmContext = {},
  ): Promise<ShellCommandResult> {
    const owner = assertOwner(spec.owner);
    const instance = await this.find(owner, hint);
    if (!instance) {
      throw new ProvisionerError("not_found", `no instance of ${ownerName(owner)} to redeploy`, false);
    }
    if (instance.state !== "running") {
      throw new ProvisionerError(
        "conflict",
        `instance ${instance.id} is ${instance.state}: start it before a redeploy`,
        false,
        { instanceId: instance.id },
      );
    }
    const secretArn = await findBootstrapBundle(this.aws, this.scope, ownerName(owner));
    if (!secretArn) {
      throw new ProvisionerError("not_found", `${ownerName(owner)} has no bootstrap bundle`, false);
    }
    const script = redeployScript({
      secretArn,
      region: this.aws.region,
      image: spec.image,
      containerName: ownerName(owner),
      port: spec.servicePort,
      dataPath: spec.dataPath,
      addressEnv: spec.addressEnv,
    });
    const result = await runShellCommand(this.aws, {
      instanceId: instance.id,
      script,
      comment: `molecule: ${ownerName(owner)} to ${spec.image}`,
      deadlineMs: options.deadlineMs,
      pollMs: options.pollMs,
      onSent: (commandId) => ctx.step?.("command_sent", `command_id=${commandId} instance_id=${instance.id}`),
    });
    ctx.step?.("command_succeeded", `command_id=${result.commandId}`);
    return result;
  }

  /** Stops (or, with `hibernate`, hibernates) the VM and waits for `stopped`; false when it has no instance. */
  async stop(
    owner: VmOwner,
    hint: VmHint = {},
    ctx: VmContext & { hibernate?: boolean } = {},
  ): Promise<boolean> {
    const instance = await this.find(owner, hint);
    if (!instance) {
      ctx.step?.("instance_missing", "nothing to stop");
      return false;
    }
    await stopInstance(this.aws, instance, this.deadline(this.options.waitDeadlineMs, DEFAULT_WAIT_MS), {
      hibernate: ctx.hibernate && instance.hibernationConfigured,
    });
    ctx.step?.(ctx.hibernate ? "instance_hibernated" : "instance_stopped", `instance_id=${instance.id}`);
    return true;
  }

  /**
   * Removes the VM: terminates every instance of the owner and polls until each is `terminated`, then deletes its
   * security group (retrying `DependencyViolation`), then its bundle secret. One deadline
   * (`terminateDeadlineMs`) bounds the polling and the group delete; past it the destroy fails retryably and what
   * remains stays tagged, so a retry (or the reconciler) finishes it. Already gone is success.
   */
  async destroy(owner: VmOwner, hint: VmHint = {}, ctx: VmContext = {}): Promise<void> {
    assertOwner(owner);
    const deadline = this.deadline(this.options.terminateDeadlineMs, DEFAULT_TERMINATE_MS);
    const instances = new Map<string, Ec2Instance>();
    if (hint.instanceId) {
      const hinted = await getInstance(this.aws, hint.instanceId);
      if (hinted && isOwnedBy(hinted.tags, this.scope, owner) && hinted.state !== "terminated") {
        instances.set(hinted.id, hinted);
      }
    }
    for (const instance of await findUnterminatedInstances(this.aws, this.scope, owner)) {
      instances.set(instance.id, instance);
    }
    for (const instance of instances.values()) {
      await terminateInstance(this.aws, instance.id, deadline);
      ctx.step?.("instance_terminated", `instance_id=${instance.id}`);
    }
    if (this.options.vpcId) {
      for (const group of await findSecurityGroups(this.aws, this.scope, owner, this.options.vpcId)) {
        if (!group.GroupId) continue;
        await deleteSecurityGroup(this.aws, group.GroupId, deadline);
        ctx.step?.("security_group_deleted", `group_id=${group.GroupId}`);
      }
    }
    await deleteBootstrapBundle(this.aws, bundleSecretName(this.scope, ownerName(owner)));
    ctx.step?.("bootstrap_deleted", "environment bundle removed");
  }

  /**
   * Removes everything of this installation tagged with `orgId`, whatever its role and whether or not a row names it
   * (strays included): instances terminated and polled to `terminated`, then groups, then bundle secrets, under one
   * terminate deadline. Returns what it removed.
   */
  async destroyOrg(orgId: string, ctx: VmContext = {}): Promise<ManagedResource[]> {
    const deadline = this.deadline(this.options.terminateDeadlineMs, DEFAULT_TERMINATE_MS);
    const resources = await this.listOrg(orgId);
    const of = (kind: string) => resources.filter((r) => r.kind === kind);
    for (const instance of of(EC2_RESOURCE_KINDS.instance)) {
      await terminateInstance(this.aws, instance.id, deadline);
      ctx.step?.("instance_terminated", `instance_id=${instance.id}`);
    }
    for (const group of of(EC2_RESOURCE_KINDS.securityGroup)) {
      await deleteSecurityGroup(this.aws, group.id, deadline);
      ctx.step?.("security_group_deleted", `group_id=${group.id}`);
    }
    for (const secret of of(EC2_RESOURCE_KINDS.secret)) {
      await deleteBootstrapBundle(this.aws, secret.id);
      ctx.step?.("bootstrap_deleted", "environment bundle removed");
    }
    return resources;
  }

  /** The instance's private address; a running instance in a VPC always has one. */
  privateIp(instance: Ec2Instance): string {
    if (!instance.privateIp) {
      throw new ProvisionerError(
        "backend_error",
        `instance ${instance.id} has no private address yet`,
        true,
        {
          instanceId: instance.id,
        },
      );
    }
    return instance.privateIp;
  }

  /** Everything of this installation (instances not terminated, groups, bundle secrets), optionally of one role. */
  async listManaged(role?: VmRole): Promise<ManagedResource[]> {
    return this.list((tags) => role === undefined || tags[EC2_TAGS.role] === role, role);
  }

  /** Everything of this installation tagged with `orgId`, whatever its role: what an org delete must remove. */
  async listOrg(orgId: string): Promise<ManagedResource[]> {
    return this.list((tags) => tags[EC2_TAGS.orgId] === orgId, undefined, orgId);
  }

  private async list(
    keep: (tags: Record<string, string>) => boolean,
    role?: VmRole,
    orgId?: string,
  ): Promise<ManagedResource[]> {
    const extra = [
      ...(role ? [{ Name: `tag:${EC2_TAGS.role}`, Values: [role] }] : []),
      ...(orgId ? [{ Name: `tag:${EC2_TAGS.orgId}`, Values: [orgId] }] : []),
    ];
    const filters = [...scopeFilters(this.scope), ...extra];
    const resource = (
      kind: string,
      id: string,
      tags: Record<string, string>,
      state?: string,
    ): ManagedResource => ({
      kind,
      id,
      workspaceId: tags[EC2_TAGS.workspaceId] ?? null,
      orgId: tags[EC2_TAGS.orgId] ?? null,
      ...(state ? { state } : {}),
    });
    const out: ManagedResource[] = [];
    for (const instance of await describeInstances(this.aws, [
      ...filters,
      { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped", "shutting-down"] },
    ])) {
      if (instance.state === "terminated" || !inScope(instance.tags, this.scope) || !keep(instance.tags))
        continue;
      out.push(resource(EC2_RESOURCE_KINDS.instance, instance.id, instance.tags, instance.state));
    }
    if (this.options.vpcId) {
      let nextToken: string | undefined;
      do {
        const token = nextToken;
        const reply = await this.aws.call("EC2", "DescribeSecurityGroups", (abortSignal) =>
          this.aws.ec2.send(
            new DescribeSecurityGroupsCommand({ Filters: filters, ...(token ? { NextToken: token } : {}) }),
            { abortSignal },
          ),
        );
        for (const group of reply.SecurityGroups ?? []) {
          const tags = tagMap(group.Tags);
          if (!group.GroupId || !inScope(tags, this.scope) || !keep(tags)) continue;
          out.push(resource(EC2_RESOURCE_KINDS.securityGroup, group.GroupId, tags));
        }
        nextToken = reply.NextToken;
      } while (nextToken);
    }
    let secretsToken: string | undefined;
    do {
      const token = secretsToken;
      const reply = await this.aws.call("SecretsManager", "ListSecrets", (abortSignal) =>
        this.aws.secrets.send(
          new ListSecretsCommand({
            Filters: [
              { Key: "tag-key", Values: [EC2_TAGS.deployment] },
              { Key: "tag-value", Values: [this.scope.deployment] },
            ],
            ...(token ? { NextToken: token } : {}),
          }),
          { abortSignal },
        ),
      );
      for (const secret of reply.SecretList ?? []) {
        const tags = tagMap(secret.Tags);
        if (!secret.ARN || secret.DeletedDate || !inScope(tags, this.scope) || !keep(tags)) continue;
        out.push(resource(EC2_RESOURCE_KINDS.secret, secret.ARN, tags));
      }
      secretsToken = reply.NextToken;
    } while (secretsToken);
    return out;
  }
}

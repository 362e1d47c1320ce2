/**
 * The EC2 workspace backend: one VM per workspace, on the shared machinery in vm.ts (Role=workspace).
 *
 * - Size: the tier's instance type and root volume from EC2_TIERS (tiers.ts); a tier outside 3-4 runs at tier 4
 *   (logged and reported as a step, never a silent smaller type); the `hermes` runtime gets at least 50 GB.
 * - Network: the workspace's own security group in the VPC, `tcp/22` only from the EC2 Instance Connect endpoint's
 *   group, the agent port (8000) only from the org's tenant security group: `agentSourceGroups(orgId)` when given,
 *   else the group tagged Role=tenant and OrgID=<org> in this deployment and environment, else `agentSourceGroupId`.
 * - Environment: spec.env (the boot token and secrets included) only in the Secrets Manager bundle; the instance
 *   reads it at boot with its instance profile and runs the workspace image with it, with
 *   AGENT_PUBLIC_URL=http://<private ip>:8000. The handle's `agentUrl` is that address: the one a managed workspace
 *   may register.
 * - stop/start are EC2 Stop/Start; suspend hibernates when `hibernation` is configured, else stops and says so;
 *   destroy terminates (polling until `terminated`), then deletes the group, then the secret.
 */
import { ProvisionerError } from "../errors.ts";
import { assertWorkspaceId } from "../naming.ts";
import type {
  Capabilities,
  Handle,
  ManagedResource,
  ProvisionContext,
  Provisioner,
  RuntimeStatus,
  SuspendResult,
  WorkspaceRef,
  WorkspaceSpec,
} from "../provisioner.ts";
import { specScrubber } from "../scrub.ts";
import { ec2Size } from "../tiers.ts";
import { AwsAccess, type AwsAccessOptions } from "./aws.ts";
import type { RegistryLogin } from "./bootstrap.ts";
import type { Ec2Instance } from "./instances.ts";
import { findSecurityGroups, orgWorkspacesOwner } from "./security-group.ts";
import type { VmOwner } from "./tags.ts";
import { Ec2Vms, type VmHint, type VmSpec } from "./vm.ts";

export const EC2_BACKEND = "ec2";
/** The port the agent serves on the VM's private address. */
export const EC2_AGENT_PORT = 8000;
/** Where the workspace's data lives in the container (a host directory on the root volume). */
export const EC2_WORKSPACE_PATH = "/workspace";
/** The AWS reason code of a stop that hibernated. */
const HIBERNATED = "Client.UserInitiatedHibernate";

/**
 * Options of `createEc2Provisioner`. The names in brackets are the settings an app's config loader reads and passes
 * in (this module reads no environment).
 */
export interface Ec2ProvisionerOptions extends AwsAccessOptions {
  /** MOLECULE_DEPLOYMENT: tagged on everything; every lookup filters on it. Specs must carry the same value. */
  deployment: string;
  /** MOLECULE_ENV: tagged on everything; every lookup filters on it, so another environment's VMs are never seen. */
  environment: string;
  /** EC2_AMI_ID: an AMI with the AWS CLI, python3 and docker (or dnf to install it): Amazon Linux 2023. */
  imageId: string;
  /** The AMI for a runtime when it has its own (the control plane's pins per runtime and region); else `imageId`. */
  imageIdFor?: (runtime: string) => Promise<string | undefined> | string | undefined;
  /** EC2_SUBNET_ID: a private subnet the tenants can reach. */
  subnetId: string;
  /** EC2_VPC_ID: each workspace gets its own security group there. Without it, `securityGroupId` is shared. */
  vpcId?: string;
  /** EC2_SECURITY_GROUP_ID: the one group every workspace uses when no VPC is configured (its rules are yours). */
  securityGroupId?: string;
  /** EC2_EIC_SECURITY_GROUP_ID: the EC2 Instance Connect endpoint's group, the only source of `tcp/22`. */
  eicSecurityGroupId?: string;
  /** EC2_INSTANCE_PROFILE (name or ARN): lets the VM read its bundle secret. Required. */
  instanceProfile?: string;
  /** EC2_KEY_NAME: an optional key pair. */
  keyName?: string;
  /** The AMI's root device name (default `/dev/xvda`). */
  rootDeviceName?: string;
  /** The workspace image is `${imagePrefix}${runtime}:${imageTag}`. */
  imagePrefix: string;
  imageTag: string;
  /** A registry login for pulling the image; its password lives in the bundle secret only. */
  registry?: RegistryLogin;
  /** The security groups that may reach an org's agents (the control plane knows its tenants' groups). */
  agentSourceGroups?: (orgId: string) => Promise<readonly string[]> | readonly string[];
  /** EC2_AGENT_SOURCE_GROUP_ID: the fallback source of the agent port when an org has no tenant group. */
  agentSourceGroupId?: string;
  /** The org's slug, tagged as OrgSlug when known. */
  orgSlug?: (orgId: string) => Promise<string | undefined> | string | undefined;
  /** EC2_HIBERNATION: launch with hibernation configured, so suspend hibernates instead of stopping. */
  hibernation?: boolean;
  /** EC2_WAIT_DEADLINE_SECONDS × 1000: how long to wait for running/stopped (default 10 min). */
  waitDeadlineMs?: number;
  /** EC2_TERMINATE_DEADLINE_SECONDS × 1000: how long to poll for `terminated` and retry the group delete (10 min). */
  terminateDeadlineMs?: number;
  /** An AwsAccess to share (the control plane's); otherwise one is built from the options above. */
  access?: AwsAccess;
}

export interface Ec2Handle extends Handle {
  backend: typeof EC2_BACKEND;
  region: string;
  instanceId: string;
  securityGroupId: string;
  secretArn: string;
  instanceType: string;
  privateIp: string;
  /** `http://<private ip>:8000`: the exact address the managed workspace may register. */
  agentUrl: string;
}

function hintOf(handle: Handle | null): VmHint {
  const id = handle?.backend === EC2_BACKEND ? handle.instanceId : undefined;
  return typeof id === "string" ? { instanceId: id } : {};
}

/** An error's message when it is one of ours (built from safe fields), else only its class. */
function safeMessage(error: unknown): string {
  if (error instanceof ProvisionerError) return error.message;
  return `unexpected ${error instanceof Error ? error.name : typeof error}`;
}

export class Ec2Provisioner implements Provisioner {
  readonly name = EC2_BACKEND;
  readonly vms: Ec2Vms;

  constructor(private readonly options: Ec2ProvisionerOptions) {
    const access = options.access ?? new AwsAccess(options);
    if (!options.imageTag) {
      throw new ProvisionerError("invalid_spec", "ec2: imageTag is required", false);
    }
    this.vms = new Ec2Vms({
      aws: access,
      scope: { deployment: options.deployment, environment: options.environment },
      imageId: options.imageId,
      subnetId: options.subnetId,
      vpcId: options.vpcId,
      securityGroupId: options.securityGroupId,
      sshSourceGroupId: options.eicSecurityGroupId,
      instanceProfile: options.instanceProfile,
      keyName: options.keyName,
      rootDeviceName: options.rootDeviceName,
      waitDeadlineMs: options.waitDeadlineMs,
      terminateDeadlineMs: options.terminateDeadlineMs,
      hibernation: options.hibernation,
      logger: options.logger,
    });
  }

  capabilities(): Capabilities {
    return { suspend: this.options.hibernation === true };
  }

  // Nothing the spec holds (nor the registry password) leaves in an error or a step detail.
  provision(spec: WorkspaceSpec, handle: Handle | null, ctx: ProvisionContext = {}): Promise<Handle> {
    const scrub = specScrubber(spec, this.options.registry?.password);
    return scrub.run(async () => {
      const owner = await this.ownerOf(spec);
      return this.vms.locked(
        owner,
        () => this.ensure(spec, owner, handle, scrub.context(ctx) ?? {}, "provision"),
        ctx.signal,
      );
    });
  }

  start(spec: WorkspaceSpec, handle: Handle | null, ctx: ProvisionContext = {}): Promise<Handle> {
    const scrub = specScrubber(spec, this.options.registry?.password);
    return scrub.run(async () => {
      const owner = await this.ownerOf(spec);
      const scrubbed = scrub.context(ctx) ?? {};
      return this.vms.locked(
        owner,
        async () => {
          if (ctx.recreate) {
            // The boot unit rebuilds the container from the bundle on every boot: new env, then a stop and a start.
            await this.vms.putBundle({ owner, env: spec.env, registry: this.options.registry });
            scrubbed.step?.("bootstrap_stored", "environment bundle replaced");
            await this.vms.stop(owner, hintOf(handle), scrubbed);
          }
          return this.ensure(spec, owner, handle, scrubbed, "start");
        },
        ctx.signal,
      );
    });
  }

  async stop(ref: WorkspaceRef, ctx: ProvisionContext = {}): Promise<void> {
    const owner = this.refOwner(ref);
    await this.vms.locked(owner, () => this.vms.stop(owner, hintOf(ref.handle), ctx), ctx.signal);
  }

  async suspend(ref: WorkspaceRef, ctx: ProvisionContext = {}): Promise<SuspendResult> {
    const owner = this.refOwner(ref);
    return this.vms.locked(
      owner,
      async () => {
        const instance = await this.vms.find(owner, hintOf(ref.handle));
        if (!instance) {
          throw new ProvisionerError("not_found", `no EC2 instance for workspace ${ref.workspaceId}`, false);
        }
        if (this.options.hibernation && instance.hibernationConfigured) {
          await this.vms.stop(owner, { instanceId: instance.id }, { ...ctx, hibernate: true });
          return { suspended: true };
        }
        await this.vms.stop(owner, { instanceId: instance.id }, ctx);
        return {
          suspended: false,
          reason: this.options.hibernation
            ? "the instance was launched without hibernation; stopped instead"
            : "EC2 hibernation is not configured for this deployment; stopped instead",
        };
      },
      ctx.signal,
    );
  }

  async destroy(ref: WorkspaceRef, ctx: ProvisionContext = {}): Promise<void> {
    const owner = this.refOwner(ref);
    await this.vms.locked(owner, () => this.vms.destroy(owner, hintOf(ref.handle), ctx), ctx.signal);
  }

  async status(ref: WorkspaceRef): Promise<RuntimeStatus> {
    const owner = this.refOwner(ref);
    let instance: Ec2Instance | null;
    try {
      instance = await this.vms.find(owner, hintOf(ref.handle));
    } catch (error) {
      return { state: "unknown", detail: safeMessage(error) };
    }
    if (!instance) return { state: "missing" };
    const detail = `ec2 state ${instance.state}`;
    switch (instance.state) {
      case "running":
        return { state: "running", detail };
      case "pending":
        return { state: "starting", detail };
      case "stopping":
        return { state: "stopped", detail };
      case "stopped":
        return instance.stateReason === HIBERNATED
          ? { state: "suspended", detail }
          : { state: "stopped", detail };
      default:
        return { state: "unknown", detail };
    }
  }

  listManaged(): Promise<ManagedResource[]> {
    return this.vms.listManaged("workspace");
  }

  // ---- helpers -------------------------------------------------------------------------------------------------

  private async ensure(
    spec: WorkspaceSpec,
    owner: VmOwner,
    handle: Handle | null,
    ctx: ProvisionContext,
    call: "provision" | "start",
  ): Promise<Ec2Handle> {
    const size = ec2Size(spec.tier, spec.runtime);
    if (size.clamped) {
      this.options.logger?.warn(
        { workspaceId: spec.workspaceId, tier: spec.tier, ec2Tier: size.tier },
        "ec2: the tier has no EC2 size; the workspace runs at the larger tier",
      );
      ctx.step?.(
        "tier_clamped",
        `tier ${spec.tier} has no EC2 size; using tier ${size.tier} (${size.instanceType})`,
      );
    }
    const vmSpec: VmSpec = {
      owner,
      image: `${this.options.imagePrefix}${spec.runtime}:${this.options.imageTag}`,
      env: spec.env,
      registry: this.options.registry,
      instanceType: size.instanceType,
      rootVolumeGb: size.volumeGb,
      servicePort: EC2_AGENT_PORT,
      serviceSourceGroupIds: this.options.vpcId ? await this.agentSources(spec.orgId) : [],
      memberGroupIds: await this.orgWorkspacesGroups(spec.orgId),
      imageId: (await this.options.imageIdFor?.(spec.runtime)) ?? this.options.imageId,
      addressEnv: "AGENT_PUBLIC_URL",
      dataPath: EC2_WORKSPACE_PATH,
      operationKey: ctx.operationId ? `${ctx.operationId}:${call}` : ctx.idempotencyKey,
    };
    const vm = await this.vms.ensure(vmSpec, hintOf(handle), ctx);
    return {
      backend: EC2_BACKEND,
      region: this.vms.aws.region,
      instanceId: vm.instance.id,
      securityGroupId: vm.securityGroupId,
      secretArn: vm.secretArn,
      instanceType: vm.instance.instanceType ?? size.instanceType,
      privateIp: vm.privateIp,
      agentUrl: `http://${vm.privateIp}:${EC2_AGENT_PORT}`,
    };
  }

  /**
   * The org's workspaces group when its tenant made one (the control plane's EC2 tenant backend): the source the
   * tenant admits on its port, so the agent reaches its platform. The tenant backend owns (and deletes) it.
   */
  private async orgWorkspacesGroups(orgId: string): Promise<string[]> {
    if (!this.options.vpcId) return [];
    const groups = await findSecurityGroups(
      this.vms.aws,
      this.vms.scope,
      orgWorkspacesOwner(orgId),
      this.options.vpcId,
    );
    return groups.map((g) => g.GroupId).filter((id): id is string => !!id);
  }

  /** The groups that may reach the org's agents: the callback's, else the org's tenant group, else the shared one. */
  private async agentSources(orgId: string): Promise<readonly string[]> {
    const given = (await this.options.agentSourceGroups?.(orgId)) ?? [];
    if (given.length > 0) return given;
    const tenantGroups = await findSecurityGroups(
      this.vms.aws,
      this.vms.scope,
      { role: "tenant", orgId },
      this.options.vpcId,
    );
    const ids = tenantGroups.map((g) => g.GroupId).filter((id): id is string => !!id);
    if (ids.length > 0) return ids;
    if (this.options.agentSourceGroupId) return [this.options.agentSourceGroupId];
    throw new ProvisionerError(
      "invalid_spec",
      "ec2: nothing may reach the agent port: the org has no tenant security group and no agentSourceGroupId " +
        "(EC2_AGENT_SOURCE_GROUP_ID) is configured",
      false,
    );
  }

  private async ownerOf(spec: WorkspaceSpec): Promise<VmOwner> {
    assertWorkspaceId(spec.workspaceId);
    if (spec.deployment !== this.options.deployment) {
      throw new ProvisionerError(
        "invalid_spec",
        `spec deployment "${spec.deployment}" does not match this ec2 backend's deployment "${this.options.deployment}"`,
        false,
      );
    }
    const orgSlug = await this.options.orgSlug?.(spec.orgId);
    return {
      role: "workspace",
      orgId: spec.orgId,
      workspaceId: spec.workspaceId,
      ...(orgSlug ? { orgSlug } : {}),
    };
  }

  private refOwner(ref: WorkspaceRef): VmOwner {
    assertWorkspaceId(ref.workspaceId);
    return { role: "workspace", orgId: ref.orgId, workspaceId: ref.workspaceId };
  }
}

export function createEc2Provisioner(options: Ec2ProvisionerOptions): Ec2Provisioner {
  return new Ec2Provisioner(options);
}

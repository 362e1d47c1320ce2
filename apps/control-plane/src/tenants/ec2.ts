/**
 * The EC2 tenant backend: one VM per org running the tenant platform image, a configuration of provisioner-core's
 * shared EC2 machinery (`Ec2Vms`, Role=tenant). Nothing here talks to AWS itself.
 *
 * - Network: the tenant's own security group in EC2_VPC_ID (or the shared EC2_SECURITY_GROUP): `tcp/22` only from
 *   EIC_ENDPOINT_SG_ID, the tenant's port only from EC2_TENANT_INGRESS_SG_IDS (the canary account: its CANARY_
 *   counterparts) and, when the org's workspaces run on
 *   EC2 in the same VPC, from the org's workspaces group (every workspace VM of the org joins it), so agents reach
 *   their platform. Never a CIDR.
 * - Environment: the spec's env (credential, signing key, admin token, CP_PROVISION_URL, ...) plus PORT, HOST,
 *   MOLECULE_DATA_DIR and, when configured, DATABASE_URL, only in the Secrets Manager bundle; user-data holds the
 *   bundle's ARN. PLATFORM_URL is set at boot to `http://<private ip>:<port>`. A GHCR_PULL_TOKEN is the bundle's
 *   registry login.
 * - Image and AMI: TENANT_IMAGE (CANARY_TENANT_IMAGE for canary orgs); the AMI pinned for `tenant-platform` in the
 *   account's region, else EC2_AMI.
 * - Canary orgs run in the canary account (STS AssumeRole credentials) with its region, VPC and subnet.
 * - The URL is TENANT_URL_TEMPLATE with `{slug}` replaced when set, else `http://<private ip>:<port>`. The org
 *   becomes ready on the tenant's boot events, as with every tenant backend.
 */
import {
  type AwsAccess,
  deleteSecurityGroup,
  type Ec2Scope,
  Ec2Vms,
  ensureOrgWorkspacesGroup,
  findSecurityGroups,
  type ManagedResource,
  orgWorkspacesOwner,
  ProvisionerError,
  type RegistryLogin,
  type RuntimeStatus,
  specScrubber,
  type VmOwner,
} from "@molecule/provisioner-core";
import type { AmiChoice } from "../services/ami.ts";
import type {
  TenantBackend,
  TenantContext,
  TenantHandle,
  TenantInstance,
  TenantRedeployed,
  TenantRef,
  TenantSpec,
} from "./backend.ts";

export const EC2_TENANT_BACKEND = "ec2";
/** The port the tenant platform listens on inside its VM (published on the VM's private address). */
export const EC2_TENANT_PORT = 8080;
/** Where the tenant's data (embedded database without TENANT_DATABASE_URL) lives in the container. */
export const EC2_TENANT_DATA_DIR = "/data";
const TENANT_ROOT_VOLUME_GB = 30;

/** One AWS account the backend runs tenants in. */
export interface Ec2TenantAccount {
  /** `primary` (the control plane's own credentials) or `canary` (assumed role). */
  name: "primary" | "canary";
  access: AwsAccess;
  subnetId: string;
  vpcId?: string;
  /** The shared group when there is no VPC. */
  securityGroupId?: string;
  /** The EC2 Instance Connect endpoint's group in this account: the only source of `tcp/22`. */
  eicEndpointSgId?: string;
  /** Groups of this account that may reach the tenant's port (a load balancer's, the operators'). */
  ingressSgIds: readonly string[];
}

export interface Ec2TenantBackendOptions {
  /** MOLECULE_DEPLOYMENT and MOLECULE_ENV: tagged on everything, every lookup filters on both. */
  scope: Ec2Scope;
  primary: Ec2TenantAccount;
  canary?: Ec2TenantAccount | null;
  /** The AMI for tenants in `region` (chooseAmi on cp_thin_ami_pins with EC2_AMI as the fallback). */
  amiFor(region: string): Promise<AmiChoice>;
  image: string;
  canaryImage: string;
  instanceProfile: string;
  instanceType: string;
  keyName?: string;
  /** True when the org's workspaces are EC2 VMs of this account: their org group may reach the tenant's port. */
  admitOrgWorkspaces: boolean;
  /** GHCR_PULL_TOKEN: the password of the registry login for the tenant images, kept in the bundle only. */
  registryToken?: string;
  /** TENANT_DATABASE_URL: handed to every tenant as DATABASE_URL (secret). */
  databaseUrl?: string;
  urlTemplate?: string | null;
  waitDeadlineMs?: number;
  terminateDeadlineMs: number;
  /** TENANT_COMMAND_DEADLINE_SECONDS × 1000: how long a redeploy's SSM command may run (default 10 min). */
  commandDeadlineMs?: number;
  /** Between two looks at a running SSM command (default 2 s). */
  commandPollMs?: number;
}

export interface Ec2TenantHandle extends TenantHandle {
  backend: typeof EC2_TENANT_BACKEND;
  account: Ec2TenantAccount["name"];
  region: string;
  instanceId: string;
  securityGroupId: string;
  secretArn: string;
  privateIp: string;
}

/** The registry of an image reference (`ghcr.io/acme/tenant:1` → `ghcr.io`), Docker Hub when it names none. */
export function registryOf(image: string): string {
  const first = image.split("/")[0] ?? "";
  return image.includes("/") && /[.:]/.test(first) ? first : "docker.io";
}

export function createEc2TenantBackend(opts: Ec2TenantBackendOptions): TenantBackend {
  const accounts = [opts.primary, ...(opts.canary ? [opts.canary] : [])];
  const vms = new Map(
    accounts.map((account) => [
      account.name,
      new Ec2Vms({
        aws: account.access,
        scope: opts.scope,
        subnetId: account.subnetId,
        vpcId: account.vpcId,
        securityGroupId: account.securityGroupId,
        sshSourceGroupId: account.eicEndpointSgId,
        instanceProfile: opts.instanceProfile,
        keyName: opts.keyName,
        waitDeadlineMs: opts.waitDeadlineMs,
        terminateDeadlineMs: opts.terminateDeadlineMs,
      }),
    ]),
  );
  const vmsOf = (account: Ec2TenantAccount) => vms.get(account.name) as Ec2Vms;
  const registryFor = (image: string): RegistryLogin | undefined =>
    opts.registryToken
      ? { server: registryOf(image), username: "molecule", password: opts.registryToken }
      : undefined;

  const accountFor = (spec: TenantSpec) => (spec.isCanary && opts.canary ? opts.canary : opts.primary);
  const owner = (ref: { orgId: string; slug: string }): VmOwner => ({
    role: "tenant",
    orgId: ref.orgId,
    orgSlug: ref.slug,
  });
  const isHandle = (handle: TenantHandle | null): handle is Ec2TenantHandle =>
    handle?.backend === EC2_TENANT_BACKEND && typeof handle.instanceId === "string";
  const hint = (handle: TenantHandle | null) => (isHandle(handle) ? { instanceId: handle.instanceId } : {});
  /** The accounts to look in: the handle's first, then the others (a provision that died before its handle). */
  function accountsOf(ref: TenantRef): Ec2TenantAccount[] {
    const named = isHandle(ref.handle) ? ref.handle.account : null;
    return [...accounts].sort((a, b) => Number(b.name === named) - Number(a.name === named));
  }

  function validate(spec: TenantSpec): void {
    if (spec.deployment !== opts.scope.deployment) {
      throw new ProvisionerError(
        "invalid_spec",
        `spec deployment "${spec.deployment}" does not match this ec2 tenant backend's deployment "${opts.scope.deployment}"`,
        false,
      );
    }
  }

  function envFor(spec: TenantSpec): Record<string, string> {
    return {
      ...spec.env,
      PORT: String(EC2_TENANT_PORT),
      HOST: "0.0.0.0",
      MOLECULE_DATA_DIR: EC2_TENANT_DATA_DIR,
      ...(opts.databaseUrl ? { DATABASE_URL: opts.databaseUrl } : {}),
    };
  }

  async function provision(
    spec: TenantSpec,
    handle: TenantHandle | null,
    ctx: TenantContext,
  ): Promise<TenantInstance> {
    validate(spec);
    const account = accountFor(spec);
    const machinery = vmsOf(account);
    const tenant = owner(spec);
    const region = account.access.region;
    const ami = await opts.amiFor(region);
    ctx.step?.("ami_chosen", `${ami.amiId} (${ami.source}, ${region}, ${account.name} account)`);
    const sources = [...account.ingressSgIds];
    const vpcId = account.vpcId;
    if (opts.admitOrgWorkspaces && account.name === "primary" && vpcId) {
      sources.push(
        await account.access.underSignal(ctx.signal, () =>
          ensureOrgWorkspacesGroup(account.access, opts.scope, spec.orgId, vpcId),
        ),
      );
    }
    const image = spec.isCanary ? opts.canaryImage : opts.image;
    const registry = registryFor(image);
    const vm = await machinery.locked(
      tenant,
      () =>
        machinery.ensure(
          {
            owner: tenant,
            image,
            imageId: ami.amiId,
            env: envFor(spec),
            ...(registry ? { registry } : {}),
            instanceType: opts.instanceType,
            rootVolumeGb: TENANT_ROOT_VOLUME_GB,
            servicePort: EC2_TENANT_PORT,
            serviceSourceGroupIds: sources,
            addressEnv: "PLATFORM_URL",
            dataPath: EC2_TENANT_DATA_DIR,
            ...(ctx.operationId ? { operationKey: `${ctx.operationId}:provision_tenant` } : {}),
          },
          hint(handle),
          ctx,
        ),
      ctx.signal,
    );
    const tenantHandle: Ec2TenantHandle = {
      backend: EC2_TENANT_BACKEND,
      account: account.name,
      region,
      instanceId: vm.instance.id,
      securityGroupId: vm.securityGroupId,
      secretArn: vm.secretArn,
      privateIp: vm.privateIp,
    };
    const url = opts.urlTemplate
      ? opts.urlTemplate.replaceAll("{slug}", spec.slug)
      : `http://${vm.privateIp}:${EC2_TENANT_PORT}`;
    return { handle: tenantHandle, url };
  }

  /** The account and machinery holding the org's tenant instance, or a non-retryable `not_found`. */
  async function locate(ref: TenantRef, signal: AbortSignal | undefined) {
    for (const account of accountsOf(ref)) {
      const machinery = vmsOf(account);
      const instance = await account.access.underSignal(signal, () =>
        machinery.find(owner(ref), hint(ref.handle)),
      );
      if (instance) return { account, machinery, instanceId: instance.id };
    }
    throw new ProvisionerError("not_found", "the org has no tenant instance", false);
  }

  async function redeploy(
    spec: TenantSpec,
    handle: TenantHandle | null,
    image: string,
    ctx: TenantContext,
  ): Promise<TenantRedeployed> {
    validate(spec);
    const ref = { orgId: spec.orgId, slug: spec.slug, handle };
    const { account, machinery, instanceId } = await locate(ref, ctx.signal);
    const tenant = owner(spec);
    const result = await machinery.locked(
      tenant,
      () =>
        machinery.redeploy(
          {
            owner: tenant,
            image,
            servicePort: EC2_TENANT_PORT,
            addressEnv: "PLATFORM_URL",
            dataPath: EC2_TENANT_DATA_DIR,
          },
          { instanceId },
          { deadlineMs: opts.commandDeadlineMs ?? 600_000, pollMs: opts.commandPollMs },
          ctx,
        ),
      ctx.signal,
    );
    ctx.step?.("image_deployed", `${image} on ${instanceId} (${account.name} account)`);
    return { output: result.output };
  }

  /** The org's workspaces group goes after the tenant's, whose rule names it. */
  async function deleteOrgWorkspacesGroups(account: Ec2TenantAccount, orgId: string): Promise<void> {
    if (!account.vpcId) return;
    const deadline = account.access.now() + opts.terminateDeadlineMs;
    for (const group of await findSecurityGroups(
      account.access,
      opts.scope,
      orgWorkspacesOwner(orgId),
      account.vpcId,
    )) {
      if (group.GroupId) await deleteSecurityGroup(account.access, group.GroupId, deadline);
    }
  }

  return {
    name: EC2_TENANT_BACKEND,

    // Nothing the spec holds (nor the pull token or database URL) leaves in an error or a step detail.
    provision(spec, handle, ctx = {}) {
      const scrub = specScrubber(spec, opts.registryToken, opts.databaseUrl);
      return scrub.run(() => provision(spec, handle, scrub.context(ctx) ?? {}));
    },

    imageFor: (isCanary) => (isCanary ? opts.canaryImage : opts.image),

    /** StopInstances, waited for `stopped`: never a termination; the root volume keeps the tenant's data. */
    async stop(ref, ctx = {}) {
      const { machinery, instanceId } = await locate(ref, ctx.signal);
      await machinery.locked(owner(ref), () => machinery.stop(owner(ref), { instanceId }, ctx), ctx.signal);
    },

    /** StartInstances, waited for `running`; the boot unit runs the tenant's container again. */
    async start(ref, ctx = {}) {
      const { machinery, instanceId } = await locate(ref, ctx.signal);
      await machinery.locked(owner(ref), () => machinery.start(owner(ref), { instanceId }, ctx), ctx.signal);
    },

    // The command's output is the VM's: nothing of the spec (nor the pull token or database URL) leaves in it.
    redeploy(spec, handle, image, ctx = {}) {
      const scrub = specScrubber(spec, opts.registryToken, opts.databaseUrl);
      return scrub.run(() => redeploy(spec, handle, image, scrub.context(ctx) ?? {}));
    },

    /** Instance (terminated and polled), group, bundle, then the org's workspaces group, in every account. */
    async destroy(ref, ctx = {}) {
      for (const account of accountsOf(ref)) {
        const machinery = vmsOf(account);
        const tenant = owner(ref);
        await machinery.locked(
          tenant,
          () =>
            machinery.destroy(
              tenant,
              isHandle(ref.handle) && ref.handle.account === account.name ? hint(ref.handle) : {},
              ctx,
            ),
          ctx.signal,
        );
        await account.access.underSignal(ctx.signal, () => deleteOrgWorkspacesGroups(account, ref.orgId));
      }
    },

    /** Everything of this installation tagged with the org, in every account: both roles, strays included. */
    async sweepOrg(ref, ctx = {}) {
      for (const account of accounts) {
        await account.access.underSignal(ctx.signal, () => vmsOf(account).destroyOrg(ref.orgId, ctx));
      }
    },

    async status(ref): Promise<RuntimeStatus> {
      try {
        for (const account of accountsOf(ref)) {
          const instance = await vmsOf(account).find(owner(ref), hint(ref.handle));
          if (!instance) continue;
          const detail = `ec2 state ${instance.state} (${account.name} account)`;
          if (instance.state === "running") return { state: "running", detail };
          if (instance.state === "pending") return { state: "starting", detail };
          if (instance.state === "stopped" || instance.state === "stopping")
            return { state: "stopped", detail };
          return { state: "unknown", detail };
        }
        return { state: "missing" };
      } catch (error) {
        if (error instanceof ProvisionerError) return { state: "unknown", detail: error.message };
        throw error;
      }
    },

    async listManaged(): Promise<ManagedResource[]> {
      const out: ManagedResource[] = [];
      for (const account of accounts) {
        out.push(...(await vmsOf(account).listManaged("tenant")));
        out.push(...(await vmsOf(account).listManaged("org-workspaces")));
      }
      return out;
    },
  };
}

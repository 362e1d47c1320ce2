import { fromTemporaryCredentials } from "@aws-sdk/credential-providers";
import type { Db } from "@molecule/db";
import {
  AwsAccess,
  createDockerProvisioner,
  createEc2Provisioner,
  createFlyProvisioner,
  HOST_GATEWAY_NAME,
  type Provisioner,
  ProvisionerError,
  type RegistryLogin,
  type RuntimeStatus,
} from "@molecule/provisioner-core";
import { eq } from "drizzle-orm";
import type { Logger } from "pino";
import type { ControlPlaneConfig } from "./config.ts";
import { cpOrgs } from "./db/schema.ts";
import { chooseAmi, TENANT_RUNTIME } from "./services/ami.ts";
import type { TenantBackend } from "./tenants/backend.ts";
import { createTenantDatabases, hostForBridge, type TenantDatabases } from "./tenants/databases.ts";
import { createDockerTenantBackend } from "./tenants/docker.ts";
import { createEc2TenantBackend, type Ec2TenantAccount, registryOf } from "./tenants/ec2.ts";

/** What building a backend may need beyond the config: the logger, and the database (AMI pins, org slugs). */
export interface BackendDeps {
  logger: Logger;
  db: Db;
  /** The secret each org's tenant database password is derived from (PROVISION_SHARED_SECRET), for per-org databases. */
  tenantDatabaseSecret?: string;
  /** AWS clients for the ec2 backends (default: one per account, from config); tests pass their own. */
  aws?: { primary: AwsAccess; canary?: AwsAccess | null };
}

/** The control plane's AWS access: its own credentials, and the canary account's through STS AssumeRole. */
export function buildAwsAccess(config: ControlPlaneConfig, logger: Logger): NonNullable<BackendDeps["aws"]> {
  const { ec2 } = config;
  const endpoint = ec2.endpoint ?? undefined;
  const awsLogger = logger.child({ component: "aws" });
  const primary = new AwsAccess({ region: ec2.region ?? "", endpoint, logger: awsLogger });
  const canary = ec2.canary
    ? new AwsAccess({
        region: ec2.canary.region,
        endpoint,
        logger: awsLogger,
        credentials: fromTemporaryCredentials({
          params: { RoleArn: ec2.canary.roleArn, RoleSessionName: `molecule-${config.deployment}` },
          clientConfig: { region: ec2.canary.region, ...(endpoint ? { endpoint } : {}) },
        }),
      })
    : null;
  return { primary, canary };
}

/** GHCR_PULL_TOKEN as the login for `image`'s registry (kept in each VM's bundle secret only). */
function registryLogin(config: ControlPlaneConfig, image: string): RegistryLogin | undefined {
  const token = config.tenantBackend.ghcrPullToken;
  return token ? { server: registryOf(image), username: "molecule", password: token } : undefined;
}

/** The workspace backend every org's workspaces run on (CP_WORKSPACE_BACKEND), built once from config. */
export function buildWorkspaceProvisioner(config: ControlPlaneConfig, deps: BackendDeps): Provisioner {
  const { logger, db } = deps;
  const backend = config.workspaceBackend;
  switch (backend.name) {
    case "docker":
      return createDockerProvisioner({
        deployment: config.deployment,
        environment: config.environment,
        imagePrefix: backend.imagePrefix,
        imageTag: backend.imageTag,
        network: backend.network,
        pullTimeoutMs: backend.pullTimeoutMs,
        logger: logger.child({ component: "docker" }),
      });
    case "flyio":
      return createFlyProvisioner({
        apiToken: backend.flyApiToken ?? "",
        app: backend.flyApp ?? "",
        region: backend.flyRegion,
        baseUrl: backend.flyBaseUrl,
        deployment: config.deployment,
        environment: config.environment,
        imagePrefix: backend.imagePrefix,
        imageTag: backend.imageTag,
        logger: logger.child({ component: "flyio" }),
      });
    case "ec2": {
      const { ec2 } = config;
      const region = ec2.region ?? "";
      const access = (deps.aws ?? buildAwsAccess(config, logger)).primary;
      return createEc2Provisioner({
        access,
        region,
        deployment: config.deployment,
        environment: config.environment,
        imageId: ec2.fallbackAmi ?? "",
        imageIdFor: async (runtime) => (await chooseAmi(db, runtime, region, ec2.fallbackAmi)).amiId,
        subnetId: ec2.subnetId ?? "",
        vpcId: ec2.vpcId ?? undefined,
        securityGroupId: ec2.sharedSecurityGroupId ?? undefined,
        eicSecurityGroupId: ec2.eicEndpointSgId ?? undefined,
        instanceProfile: ec2.workspaceIamProfile ?? undefined,
        keyName: ec2.keyName ?? undefined,
        imagePrefix: backend.imagePrefix,
        imageTag: backend.imageTag,
        registry: registryLogin(config, backend.imagePrefix),
        orgSlug: async (orgId) =>
          (await db.select({ slug: cpOrgs.slug }).from(cpOrgs).where(eq(cpOrgs.id, orgId)))[0]?.slug,
        terminateDeadlineMs: ec2.terminateDeadlineMs,
        hibernation: ec2.hibernation,
        logger: logger.child({ component: "ec2" }),
      });
    }
  }
}

/** TENANT_DATABASES=per-org: a database per org on the configured server, reached from tenant containers. */
function perOrgDatabases(config: ControlPlaneConfig, deps: BackendDeps): TenantDatabases | undefined {
  const perOrg = config.tenantBackend.perOrgDatabases;
  if (!perOrg?.adminUrl) return undefined;
  if (!deps.tenantDatabaseSecret)
    throw new Error("per-org tenant databases need the provision shared secret");
  const network = config.tenantBackend.network;
  const tenantHost = network === "host" ? undefined : hostForBridge(perOrg.adminUrl, HOST_GATEWAY_NAME);
  return createTenantDatabases({
    adminUrl: perOrg.adminUrl,
    passwordSecret: deps.tenantDatabaseSecret,
    deployment: config.deployment,
    ...(tenantHost ? { tenantHost } : {}),
  });
}

/** The backend that runs one tenant platform per org (CP_TENANT_BACKEND). */
export function buildTenantBackend(config: ControlPlaneConfig, deps: BackendDeps): TenantBackend {
  const { logger, db } = deps;
  switch (config.tenantBackend.name) {
    case "docker":
      return createDockerTenantBackend({
        image: config.tenantBackend.image,
        canaryImage: config.tenantBackend.canaryImage,
        network: config.tenantBackend.network,
        deployment: config.deployment,
        environment: config.environment,
        logger: logger.child({ component: "tenants" }),
        databases: perOrgDatabases(config, deps),
      });
    case "external":
      return createExternalTenantBackend(config.tenantBackend.urlTemplate ?? "");
    case "ec2": {
      const { ec2, tenantBackend } = config;
      const aws = deps.aws ?? buildAwsAccess(config, logger);
      const primary: Ec2TenantAccount = {
        name: "primary",
        access: aws.primary,
        subnetId: ec2.subnetId ?? "",
        vpcId: ec2.vpcId ?? undefined,
        securityGroupId: ec2.sharedSecurityGroupId ?? undefined,
        eicEndpointSgId: ec2.eicEndpointSgId ?? undefined,
        ingressSgIds: ec2.tenantIngressSgIds,
      };
      const canary: Ec2TenantAccount | null =
        ec2.canary && aws.canary
          ? {
              name: "canary",
              access: aws.canary,
              subnetId: ec2.canary.subnetId,
              vpcId: ec2.canary.vpcId,
              eicEndpointSgId: ec2.canary.eicEndpointSgId ?? undefined,
              ingressSgIds: ec2.canary.ingressSgIds,
            }
          : null;
      return createEc2TenantBackend({
        scope: { deployment: config.deployment, environment: config.environment },
        primary,
        canary,
        amiFor: (region) => chooseAmi(db, TENANT_RUNTIME, region, ec2.fallbackAmi),
        image: tenantBackend.image,
        canaryImage: tenantBackend.canaryImage,
        instanceProfile: ec2.tenantIamProfile ?? "",
        instanceType: ec2.instanceType,
        keyName: ec2.keyName ?? undefined,
        admitOrgWorkspaces: config.workspaceBackend.name === "ec2",
        registryToken: tenantBackend.ghcrPullToken ?? undefined,
        databaseUrl: tenantBackend.databaseUrl ?? undefined,
        urlTemplate: tenantBackend.urlTemplate,
        terminateDeadlineMs: ec2.terminateDeadlineMs,
        commandDeadlineMs: tenantBackend.commandDeadlineMs,
      });
    }
  }
}

/**
 * CP_TENANT_BACKEND=external: the operator starts each org's tenant platform (with the org id, the tenant
 * credential and admin token from the create answer, and the org's signing key); the control plane runs nothing and
 * owns nothing. The org becomes `ready` when that tenant reports its boot; its URL is TENANT_URL_TEMPLATE with
 * `{slug}` replaced.
 */
export function createExternalTenantBackend(urlTemplate: string): TenantBackend {
  const elsewhere = async (): Promise<never> => {
    throw new ProvisionerError(
      "invalid_spec",
      "CP_TENANT_BACKEND=external: tenants are started by the operator; stop, start and redeploy them where they run",
      false,
    );
  };
  return {
    name: "external",
    ownsNothing: true,
    imageFor: () => "",
    stop: elsewhere,
    start: elsewhere,
    redeploy: elsewhere,
    async provision(spec, _handle, ctx) {
      const url = urlTemplate.replaceAll("{slug}", spec.slug);
      ctx?.step?.("tenant_external", "started by the operator");
      return { handle: { backend: "external" }, url };
    },
    async destroy() {},
    async sweepOrg() {},
    async status(): Promise<RuntimeStatus> {
      return { state: "unknown", detail: "the tenant is started by the operator" };
    },
    async listManaged() {
      return [];
    },
  };
}

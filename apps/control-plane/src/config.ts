import { S3_URL_PATTERN } from "@molecule/contracts";
import { DEFAULT_WORKSPACE_NETWORK } from "@molecule/provisioner-core";
import {
  ConfigError,
  DAY_MS,
  dockerHostUrl,
  duration,
  isStrictEnvironment,
  operationDeadlines,
  parseEnv,
  ratePerMinute,
  serviceConfig,
  serviceEnv,
} from "@molecule/service-kit/config";
import { z } from "zod";
import type { CpAnyOperationKind } from "./db/schema.ts";
import { DEFAULT_RATE_LIMITS } from "./http/rate-limits.ts";

export { ConfigError };

function isKey(text: string): boolean {
  if (/^[0-9a-f]{64}$/i.test(text)) return true;
  return /^[A-Za-z0-9+/_-]+={0,2}$/.test(text) && Buffer.from(text, "base64").length === 32;
}

function commaList(text: string): string[] {
  return text
    .split(",")
    .map((part) => part.trim())
    .filter(Boolean);
}

/** An AWS resource id of `prefix` (vpc-…, subnet-…, sg-…, ami-…). */
const awsId = (variable: string, prefix: string) =>
  z
    .string()
    .regex(new RegExp(`^${prefix}-[0-9a-f]{8,17}$`), `${variable} must be an id like ${prefix}-0123abcd`);

const awsRegion = (variable: string) =>
  z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, `${variable} must be a region such as us-east-1`);

/**
 * Seconds one attempt of each kind may run before it is abandoned as hung (OPERATION_DEADLINES overrides). Generous:
 * an EC2 tenant or workspace can legitimately take minutes to launch and boot.
 */
export const DEFAULT_OPERATION_DEADLINES_SECONDS: Record<CpAnyOperationKind, number> = {
  provision_tenant: 900,
  destroy_org: 600,
  provision: 900,
  start: 900,
  stop: 600,
  suspend: 600,
  destroy: 600,
  stop_tenant: 900,
  start_tenant: 1200,
  // The SSM command (TENANT_COMMAND_DEADLINE_SECONDS) and the wait for ready (TENANT_READY_DEADLINE_SECONDS) fit.
  redeploy_tenant: 1200,
};

const EnvSchema = z.object({
  ...serviceEnv({ port: 8090, dataDir: "./.data/control-plane" }),
  OPERATION_DEADLINES: operationDeadlines(DEFAULT_OPERATION_DEADLINES_SECONDS),
  EVENT_RETENTION_DAYS: z.coerce.number().positive().default(7),
  CP_ADMIN_API_TOKEN: z.string().min(16, "CP_ADMIN_API_TOKEN must be at least 16 characters").optional(),
  PROVISION_SHARED_SECRET: z
    .string()
    .min(32, "PROVISION_SHARED_SECRET must be at least 32 characters")
    .optional(),
  CP_SECRETS_ENCRYPTION_KEY: z
    .string()
    .refine(isKey, "CP_SECRETS_ENCRYPTION_KEY must be 32 bytes, as 64 hex characters or base64")
    .optional(),
  CP_SECRETS_ENCRYPTION_KEY_VERSION: z.coerce.number().int().min(1).default(1),
  CP_SECRETS_ENCRYPTION_OLD_KEYS: z.string().default(""),
  CP_PUBLIC_URL: z.string().url().optional(),
  CP_WORKSPACE_BACKEND: z.enum(["docker", "flyio", "ec2"]).default("docker"),
  CP_TENANT_BACKEND: z.enum(["docker", "external", "ec2"]).default("docker"),
  TENANT_URL_TEMPLATE: z
    .string()
    .refine(
      (text) => URL.canParse(text.replaceAll("{slug}", "slug")),
      "TENANT_URL_TEMPLATE must be a URL, with {slug} where the org's slug goes",
    )
    .optional(),
  TENANT_IMAGE: z.string().default("molecule/tenant-platform:latest"),
  CANARY_TENANT_IMAGE: z.string().optional(),
  TENANT_COMMAND_DEADLINE_SECONDS: z.coerce.number().positive().default(600),
  TENANT_READY_DEADLINE_SECONDS: z.coerce.number().positive().default(300),
  GHCR_PULL_TOKEN: z.string().optional(),
  TENANT_DATABASE_URL: z.string().url("TENANT_DATABASE_URL must be a URL").optional(),
  TENANT_DATABASES: z.enum(["embedded", "per-org"]).default("embedded"),
  CP_TENANT_DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\/[^\s]+$/, "CP_TENANT_DATABASE_URL must be a postgres:// URL")
    .optional(),
  TENANT_NETWORK: z.enum(["host", "bridge"]).default("bridge"),
  WORKSPACE_IMAGE_PREFIX: z.string().default("molecule/workspace-"),
  WORKSPACE_IMAGE_TAG: z.string().default("latest"),
  WORKSPACE_NETWORK: z.string().default(DEFAULT_WORKSPACE_NETWORK),
  IMAGE_PULL_TIMEOUT_SECONDS: z.coerce.number().positive().default(120),
  FLY_API_TOKEN: z.string().optional(),
  FLY_WORKSPACE_APP: z.string().optional(),
  FLY_REGION: z.string().default("ord"),
  FLY_API_BASE_URL: z.string().url().default("https://api.machines.dev"),
  AWS_REGION: awsRegion("AWS_REGION").optional(),
  AWS_ENDPOINT_URL: z.string().url("AWS_ENDPOINT_URL must be a URL").optional(),
  EC2_VPC_ID: awsId("EC2_VPC_ID", "vpc").optional(),
  EC2_SUBNET_ID: awsId("EC2_SUBNET_ID", "subnet").optional(),
  EC2_SECURITY_GROUP: awsId("EC2_SECURITY_GROUP", "sg").optional(),
  EIC_ENDPOINT_SG_ID: awsId("EIC_ENDPOINT_SG_ID", "sg").optional(),
  EC2_TENANT_INGRESS_SG_IDS: z
    .string()
    .transform(commaList)
    .pipe(z.array(awsId("EC2_TENANT_INGRESS_SG_IDS", "sg")))
    .default([]),
  EC2_TENANT_IAM_PROFILE: z.string().optional(),
  EC2_WORKSPACE_IAM_PROFILE: z.string().optional(),
  EC2_INSTANCE_TYPE: z
    .string()
    .regex(/^[a-z0-9-]+\.[a-z0-9-]+$/, "EC2_INSTANCE_TYPE must be an instance type such as t3.small")
    .default("t3.small"),
  EC2_KEY_NAME: z.string().optional(),
  EC2_AMI: awsId("EC2_AMI", "ami").optional(),
  EC2_TERMINATE_DEADLINE_SECONDS: z.coerce.number().positive().default(300),
  EC2_HIBERNATION: z.enum(["true", "false"]).default("false"),
  CANARY_ROLE_ARN: z
    .string()
    .regex(/^arn:aws[a-z-]*:iam::\d{12}:role\/.+$/, "CANARY_ROLE_ARN must be an IAM role ARN")
    .optional(),
  CANARY_REGION: awsRegion("CANARY_REGION").optional(),
  CANARY_VPC_ID: awsId("CANARY_VPC_ID", "vpc").optional(),
  CANARY_SUBNET_ID: awsId("CANARY_SUBNET_ID", "subnet").optional(),
  CANARY_EIC_ENDPOINT_SG_ID: awsId("CANARY_EIC_ENDPOINT_SG_ID", "sg").optional(),
  CANARY_TENANT_INGRESS_SG_IDS: z
    .string()
    .transform(commaList)
    .pipe(z.array(awsId("CANARY_TENANT_INGRESS_SG_IDS", "sg")))
    .default([]),
  BACKUP_STALE_AFTER: duration("BACKUP_STALE_AFTER", 60_000).default(36 * 60 * 60_000),
  RATE_LIMIT_ADMIN_PER_MINUTE: ratePerMinute("RATE_LIMIT_ADMIN_PER_MINUTE", DEFAULT_RATE_LIMITS.admin),
  RATE_LIMIT_TENANT_PER_MINUTE: ratePerMinute("RATE_LIMIT_TENANT_PER_MINUTE", DEFAULT_RATE_LIMITS.tenant),
  TENANT_BACKUP_S3_PREFIX: z
    .string()
    .trim()
    .refine(
      (text) => text === "" || S3_URL_PATTERN.test(text),
      "TENANT_BACKUP_S3_PREFIX must be an s3://bucket/prefix URL (empty disables backups)",
    )
    .default(""),
  // Checked here as the tenant checks them, and passed on as written: a bad value stops this start-up, not every tenant's.
  TENANT_BACKUP_INTERVAL: z
    .string()
    .refine(
      (text) => duration("TENANT_BACKUP_INTERVAL", 60_000).safeParse(text).success,
      "TENANT_BACKUP_INTERVAL must be a duration such as 24h or 90m, at least a minute",
    )
    .optional(),
  TENANT_BACKUP_FORMAT: z
    .enum(["custom", "plain"], { message: "TENANT_BACKUP_FORMAT must be custom or plain" })
    .optional(),
  TENANT_BACKUP_S3_REGION: z.string().optional(),
  TENANT_BACKUP_S3_ENDPOINT: z.string().url("TENANT_BACKUP_S3_ENDPOINT must be a URL").optional(),
  TENANT_BACKUP_S3_ACCESS_KEY_ID: z.string().optional(),
  TENANT_BACKUP_S3_SECRET_ACCESS_KEY: z.string().optional(),
});

/**
 * The backup settings each tenant is provisioned with, passed through as they are set here (the tenant checks its
 * own values at start-up): nothing at all while TENANT_BACKUP_S3_PREFIX is empty.
 */
function tenantBackupEnv(env: z.infer<typeof EnvSchema>): Record<string, string> {
  if (!env.TENANT_BACKUP_S3_PREFIX) return {};
  const names = [
    "TENANT_BACKUP_S3_PREFIX",
    "TENANT_BACKUP_INTERVAL",
    "TENANT_BACKUP_FORMAT",
    "TENANT_BACKUP_S3_REGION",
    "TENANT_BACKUP_S3_ENDPOINT",
    "TENANT_BACKUP_S3_ACCESS_KEY_ID",
    "TENANT_BACKUP_S3_SECRET_ACCESS_KEY",
  ] as const;
  return Object.fromEntries(
    names.flatMap((name) => (env[name] ? [[name, env[name]] as const] : [])),
  ) as Record<string, string>;
}

const CANARY_VARIABLES = ["CANARY_ROLE_ARN", "CANARY_REGION", "CANARY_VPC_ID", "CANARY_SUBNET_ID"] as const;

export type ControlPlaneConfig = ReturnType<typeof shape>;

function shape(env: z.infer<typeof EnvSchema>) {
  /**
   * publicUrl: how tenants reach the control plane (injected as their CP_PROVISION_URL). Default: loopback for
   * host-networked tenants, else the Docker host as seen from a bridge network.
   */
  const base = serviceConfig(env, env.CP_PUBLIC_URL ?? dockerHostUrl(env.TENANT_NETWORK, env.PORT));
  return {
    ...base,
    /** Per credential, per process (docs/operations.md): with N replicas a credential may make N times as many. */
    rateLimits: {
      admin: env.RATE_LIMIT_ADMIN_PER_MINUTE,
      tenant: env.RATE_LIMIT_TENANT_PER_MINUTE,
      maxKeys: base.rateLimitMaxKeys,
    },
    operations: { ...base.operations, deadlinesMs: env.OPERATION_DEADLINES },
    /** Finished operations and tenant boot events older than these are pruned; org tombstones are kept. */
    retention: { ...base.retention, eventsMs: env.EVENT_RETENTION_DAYS * DAY_MS },
    /**
     * Unset in development: generated once into the data folder at start-up (bootstrap.ts). Production refuses to
     * start without them.
     */
    auth: {
      adminToken: env.CP_ADMIN_API_TOKEN ?? null,
      provisionSharedSecret: env.PROVISION_SHARED_SECRET ?? null,
    },
    secrets: {
      key: env.CP_SECRETS_ENCRYPTION_KEY ?? null,
      keyVersion: env.CP_SECRETS_ENCRYPTION_KEY_VERSION,
      oldKeys: env.CP_SECRETS_ENCRYPTION_OLD_KEYS,
    },
    workspaceBackend: {
      name: env.CP_WORKSPACE_BACKEND,
      imagePrefix: env.WORKSPACE_IMAGE_PREFIX,
      imageTag: env.WORKSPACE_IMAGE_TAG,
      network: env.WORKSPACE_NETWORK,
      pullTimeoutMs: env.IMAGE_PULL_TIMEOUT_SECONDS * 1000,
      flyApiToken: env.FLY_API_TOKEN,
      flyApp: env.FLY_WORKSPACE_APP,
      flyRegion: env.FLY_REGION,
      flyBaseUrl: env.FLY_API_BASE_URL,
    },
    tenantBackend: {
      name: env.CP_TENANT_BACKEND,
      image: env.TENANT_IMAGE,
      /** `bridge` puts tenants on WORKSPACE_NETWORK when that is a user-defined network, so workspaces reach them by name. */
      network:
        env.TENANT_NETWORK === "bridge" && !["host", "bridge", "none"].includes(env.WORKSPACE_NETWORK)
          ? env.WORKSPACE_NETWORK
          : env.TENANT_NETWORK,
      /**
       * `external`: the org's tenant URL, `{slug}` replaced (tenants are started by the operator). `ec2`: the same
       * when set, else the instance's private address.
       */
      urlTemplate: env.TENANT_URL_TEMPLATE ?? null,
      /** The image of `is_canary` orgs' tenants (ec2); default TENANT_IMAGE. */
      canaryImage: env.CANARY_TENANT_IMAGE ?? env.TENANT_IMAGE,
      /** Secrets handed to EC2 tenants in their bootstrap bundle, never in user-data. */
      ghcrPullToken: env.GHCR_PULL_TOKEN ?? null,
      databaseUrl: env.TENANT_DATABASE_URL ?? null,
      /**
       * TENANT_DATABASES=per-org (docker): each org's tenant gets its own database on this server (an admin URL:
       * CP_TENANT_DATABASE_URL, else the control plane's own DATABASE_URL), made and dropped with the org.
       */
      perOrgDatabases:
        env.TENANT_DATABASES === "per-org"
          ? { adminUrl: env.CP_TENANT_DATABASE_URL ?? env.DATABASE_URL ?? null }
          : null,
      /** How long a redeploy's SSM command (ec2) may run before it is cancelled and the redeploy fails. */
      commandDeadlineMs: env.TENANT_COMMAND_DEADLINE_SECONDS * 1000,
      /** How long a started or redeployed tenant may take to report `ready` (with the new image). */
      readyDeadlineMs: env.TENANT_READY_DEADLINE_SECONDS * 1000,
    },
    backups: {
      /** A tenant with no succeeded backup within this is flagged stale in GET /cp/admin/backups. */
      staleAfterMs: env.BACKUP_STALE_AFTER,
      /** Added to every tenant's environment when it is provisioned (docker and EC2 alike). */
      tenantEnv: tenantBackupEnv(env),
    },
    /** AWS for the ec2 tenant and workspace backends; checked in loadConfig when either is selected. */
    ec2: {
      region: env.AWS_REGION ?? null,
      endpoint: env.AWS_ENDPOINT_URL ?? null,
      vpcId: env.EC2_VPC_ID ?? null,
      subnetId: env.EC2_SUBNET_ID ?? null,
      /** The shared group instances join when there is no VPC to make per-tenant groups in. */
      sharedSecurityGroupId: env.EC2_SECURITY_GROUP ?? null,
      /** Source of SSH (22) ingress: the EC2 Instance Connect endpoint's group. */
      eicEndpointSgId: env.EIC_ENDPOINT_SG_ID ?? null,
      /** Sources allowed to reach a tenant's HTTP port (a load balancer's group, the control plane's). */
      tenantIngressSgIds: env.EC2_TENANT_INGRESS_SG_IDS,
      tenantIamProfile: env.EC2_TENANT_IAM_PROFILE ?? null,
      workspaceIamProfile: env.EC2_WORKSPACE_IAM_PROFILE ?? env.EC2_TENANT_IAM_PROFILE ?? null,
      instanceType: env.EC2_INSTANCE_TYPE,
      keyName: env.EC2_KEY_NAME ?? null,
      /** The AMI when thin_ami_pins has none for the runtime and region. */
      fallbackAmi: env.EC2_AMI ?? null,
      terminateDeadlineMs: env.EC2_TERMINATE_DEADLINE_SECONDS * 1000,
      /** Workspace instances launch hibernation-ready and suspend hibernates them; otherwise suspend stops. */
      hibernation: env.EC2_HIBERNATION === "true",
      /** A second AWS account for `is_canary` orgs, reached with STS AssumeRole. */
      canary:
        env.CANARY_ROLE_ARN && env.CANARY_REGION && env.CANARY_VPC_ID && env.CANARY_SUBNET_ID
          ? {
              roleArn: env.CANARY_ROLE_ARN,
              region: env.CANARY_REGION,
              vpcId: env.CANARY_VPC_ID,
              subnetId: env.CANARY_SUBNET_ID,
              /** The canary account's own groups: another account's cannot be named in a rule. */
              eicEndpointSgId: env.CANARY_EIC_ENDPOINT_SG_ID ?? null,
              ingressSgIds: env.CANARY_TENANT_INGRESS_SG_IDS,
            }
          : null,
    },
  };
}

/** The EC2 rules, one line each, checked when either backend is `ec2` (the canary account's always). */
function checkEc2(config: ControlPlaneConfig, env: z.infer<typeof EnvSchema>): void {
  const canarySet = CANARY_VARIABLES.filter((name) => env[name]);
  if (canarySet.length > 0 && canarySet.length < CANARY_VARIABLES.length) {
    const missing = CANARY_VARIABLES.filter((name) => !env[name]);
    throw new ConfigError(
      `${CANARY_VARIABLES.join(", ")} are set together (the canary account): missing ${missing.join(", ")}`,
    );
  }
  const tenants = config.tenantBackend.name === "ec2";
  const workspaces = config.workspaceBackend.name === "ec2";
  if (workspaces && !tenants) {
    throw new ConfigError(
      "CP_WORKSPACE_BACKEND=ec2 needs CP_TENANT_BACKEND=ec2: an org's tenant security group is the only source allowed on its agents' port",
    );
  }
  if (!tenants) return;
  const ec2 = config.ec2;
  if (!ec2.region) throw new ConfigError("AWS_REGION is required when CP_TENANT_BACKEND=ec2");
  if (!ec2.vpcId && !ec2.sharedSecurityGroupId) {
    throw new ConfigError(
      "EC2_VPC_ID (per-tenant security groups) or EC2_SECURITY_GROUP (one shared group) is required when CP_TENANT_BACKEND=ec2",
    );
  }
  if (!ec2.subnetId) {
    throw new ConfigError(
      "EC2_SUBNET_ID is required when CP_TENANT_BACKEND=ec2 (the instances' subnet; with EC2_VPC_ID, one of that VPC)",
    );
  }
  if (!env.CP_PUBLIC_URL) {
    throw new ConfigError(
      "CP_PUBLIC_URL is required when CP_TENANT_BACKEND=ec2: the address tenant instances reach the control plane at",
    );
  }
  if (!ec2.tenantIamProfile) {
    throw new ConfigError(
      "EC2_TENANT_IAM_PROFILE is required when CP_TENANT_BACKEND=ec2: Secrets Manager + IAM instance profile are required (the tenant reads its bootstrap bundle with the profile's role; no secret goes in user-data)",
    );
  }
}

function checkTenantDatabases(config: ControlPlaneConfig, values: z.infer<typeof EnvSchema>): void {
  const perOrg = config.tenantBackend.perOrgDatabases;
  if (!perOrg) {
    if (values.CP_TENANT_DATABASE_URL) {
      throw new ConfigError("CP_TENANT_DATABASE_URL is used only with TENANT_DATABASES=per-org");
    }
    return;
  }
  if (config.tenantBackend.name !== "docker") {
    throw new ConfigError(
      "TENANT_DATABASES=per-org needs CP_TENANT_BACKEND=docker (ec2 tenants take TENANT_DATABASE_URL)",
    );
  }
  if (!perOrg.adminUrl) {
    throw new ConfigError(
      "TENANT_DATABASES=per-org needs CP_TENANT_DATABASE_URL (or DATABASE_URL): the server the org databases are made on",
    );
  }
}

/** Reads the environment once; a bad value stops start-up with one line naming the variable. */
export function loadConfig(env: Record<string, string | undefined>): ControlPlaneConfig {
  const values = parseEnv(EnvSchema, env);
  const config = shape(values);
  if (isStrictEnvironment(config.environment)) {
    const missing = [
      ["CP_ADMIN_API_TOKEN", config.auth.adminToken],
      ["PROVISION_SHARED_SECRET", config.auth.provisionSharedSecret],
      ["CP_SECRETS_ENCRYPTION_KEY", config.secrets.key],
    ].find(([, value]) => !value);
    if (missing) throw new ConfigError(`${missing[0]} is required when MOLECULE_ENV=${config.environment}`);
  }
  if (config.tenantBackend.name === "external" && !config.tenantBackend.urlTemplate) {
    throw new ConfigError("TENANT_URL_TEMPLATE is required when CP_TENANT_BACKEND=external");
  }
  const fly = config.workspaceBackend;
  if (fly.name === "flyio" && !fly.flyApiToken) {
    throw new ConfigError("FLY_API_TOKEN is required when CP_WORKSPACE_BACKEND=flyio");
  }
  if (fly.name === "flyio" && !fly.flyApp) {
    throw new ConfigError("FLY_WORKSPACE_APP is required when CP_WORKSPACE_BACKEND=flyio");
  }
  checkEc2(config, values);
  checkTenantDatabases(config, values);
  if (Boolean(values.TENANT_BACKUP_S3_ACCESS_KEY_ID) !== Boolean(values.TENANT_BACKUP_S3_SECRET_ACCESS_KEY)) {
    throw new ConfigError(
      "TENANT_BACKUP_S3_ACCESS_KEY_ID and TENANT_BACKUP_S3_SECRET_ACCESS_KEY are set together (or neither)",
    );
  }
  return config;
}

import { ImageRef, type OperationKind, parseS3Prefix } from "@molecule/contracts";
import {
  BackendSelectionError,
  DEFAULT_CP_PROVISION_URL,
  DEFAULT_FLY_REGION,
  DEFAULT_WORKSPACE_NETWORK,
  selectBackend,
} from "@molecule/provisioner-core";
import {
  ConfigError,
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
import { DEFAULT_RATE_LIMITS } from "./http/rate-limits.ts";

export { ConfigError };

const csv = z.string().transform((value) =>
  value
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean),
);

/**
 * Seconds one attempt of each kind may run before it is abandoned as hung (OPERATION_DEADLINES overrides). Generous:
 * on the controlplane backend a provision waits for the control plane's own (an EC2 launch takes minutes).
 */
export const DEFAULT_OPERATION_DEADLINES_SECONDS: Record<OperationKind, number> = {
  provision: 900,
  start: 900,
  restart: 900,
  redeploy: 900,
  stop: 600,
  suspend: 600,
  destroy: 600,
};

const EnvSchema = z.object({
  ...serviceEnv({ port: 8080, dataDir: "./.data" }),
  OPERATION_DEADLINES: operationDeadlines(DEFAULT_OPERATION_DEADLINES_SECONDS),
  PLATFORM_URL: z.string().url().optional(),
  ADMIN_TOKEN: z.string().min(16, "ADMIN_TOKEN must be at least 16 characters").optional(),
  SECRETS_ENCRYPTION_KEY: z.string().optional(),
  SECRETS_ENCRYPTION_KEY_VERSION: z.coerce.number().int().min(1).default(1),
  SECRETS_ENCRYPTION_OLD_KEYS: z.string().default(""),
  /** Trimmed: a blank-looking value is unset, here and in selectBackend alike. */
  MOLECULE_ORG_ID: z.string().trim().default(""),
  CONTAINER_BACKEND: z.string().optional(),
  ALLOWED_RUNTIMES: csv.default(["echo"]),
  WORKSPACE_IMAGE_PREFIX: z.string().default("molecule/workspace-"),
  WORKSPACE_IMAGE_TAG: z.string().default("latest"),
  WORKSPACE_NETWORK: z.string().default(DEFAULT_WORKSPACE_NETWORK),
  IMAGE_PULL_TIMEOUT_SECONDS: z.coerce.number().positive().default(120),
  HEARTBEAT_STALE_AFTER: z.coerce.number().positive().default(90),
  REDEPLOY_ONLINE_TIMEOUT_SECONDS: z.coerce.number().positive().default(300),
  STATUS_SWEEP_INTERVAL: z.coerce.number().positive().default(15),
  A2A_TIMEOUT_SECONDS: z.coerce.number().positive().default(60),
  /** How long a workspace may be idle before it is suspended, unless it was created with its own; off by default. */
  IDLE_SUSPEND_AFTER: z
    .string()
    .trim()
    .pipe(z.union([z.enum(["", "0", "off"]).transform(() => null), duration("IDLE_SUSPEND_AFTER", 1_000)]))
    .optional(),
  A2A_WAKE_TIMEOUT_SECONDS: z.coerce.number().positive().default(60),
  A2A_MAX_REQUEST_BYTES: z.coerce
    .number()
    .int()
    .positive()
    .default(1024 * 1024),
  A2A_MAX_RESPONSE_BYTES: z.coerce
    .number()
    .int()
    .positive()
    .default(4 * 1024 * 1024),
  FLY_API_TOKEN: z.string().optional(),
  FLY_WORKSPACE_APP: z.string().optional(),
  FLY_REGION: z.string().default(DEFAULT_FLY_REGION),
  FLY_API_BASE_URL: z.string().url().default("https://api.machines.dev"),
  FLY_FALLBACK_REGIONS: csv.default([]),
  FLY_WAIT_DEADLINE_SECONDS: z.coerce.number().positive().default(300),
  CP_PROVISION_URL: z.string().url().optional(),
  CP_TENANT_TOKEN: z.string().optional(),
  PROVISION_SHARED_SECRET: z.string().optional(),
  CP_STARTUP_WAIT_SECONDS: z.coerce.number().positive().default(60),
  /** The image this platform runs as, set by the control plane's tenant backend; reported with its boot events. */
  MOLECULE_IMAGE: ImageRef.optional(),
  ALLOW_INSECURE_AGENT_URLS: z.enum(["true", "false"]).optional(),
  ALLOW_PRIVATE_AGENT_URLS: z.enum(["true", "false"]).optional(),
  TENANT_BACKUP_S3_PREFIX: z
    .string()
    .trim()
    .refine(
      (text) => text === "" || parseS3Prefix(text) !== null,
      "TENANT_BACKUP_S3_PREFIX must be an s3://bucket/prefix URL (empty disables backups)",
    )
    .default(""),
  TENANT_BACKUP_INTERVAL: duration("TENANT_BACKUP_INTERVAL", 60_000).default(24 * 3_600_000),
  TENANT_BACKUP_FORMAT: z
    .enum(["custom", "plain"], { message: "TENANT_BACKUP_FORMAT must be custom or plain" })
    .default("custom"),
  TENANT_BACKUP_REPORT_URL: z.string().url("TENANT_BACKUP_REPORT_URL must be a URL").optional(),
  TENANT_BACKUP_S3_REGION: z.string().default("us-east-1"),
  TENANT_BACKUP_S3_ENDPOINT: z.string().url("TENANT_BACKUP_S3_ENDPOINT must be a URL").optional(),
  TENANT_BACKUP_S3_ACCESS_KEY_ID: z.string().optional(),
  TENANT_BACKUP_S3_SECRET_ACCESS_KEY: z.string().optional(),
  RATE_LIMIT_API_PER_MINUTE: ratePerMinute("RATE_LIMIT_API_PER_MINUTE", DEFAULT_RATE_LIMITS.api),
  RATE_LIMIT_AGENT_PER_MINUTE: ratePerMinute("RATE_LIMIT_AGENT_PER_MINUTE", DEFAULT_RATE_LIMITS.agent),
  RATE_LIMIT_A2A_PER_MINUTE: ratePerMinute("RATE_LIMIT_A2A_PER_MINUTE", DEFAULT_RATE_LIMITS.a2a),
  /** Where pg_dump is looked for. */
  PATH: z.string().default(""),
});

/** Where the control plane takes backup reports, under its base URL, unless TENANT_BACKUP_REPORT_URL says otherwise. */
export const BACKUP_REPORT_PATH = "/cp/tenants/backup-report";

/**
 * Cloud credentials a tenant in controlplane mode must not hold: the control plane alone talks to Fly and AWS. The
 * AWS names are every way the AWS SDKs find credentials in the environment.
 */
export const CLOUD_CREDENTIAL_VARIABLES = [
  "FLY_API_TOKEN",
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  "AWS_PROFILE",
  "AWS_WEB_IDENTITY_TOKEN_FILE",
  "AWS_CONTAINER_CREDENTIALS_FULL_URI",
  "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
] as const;

export type TenantConfig = ReturnType<typeof shape>;

/**
 * The backend, decided once here by provisioner-core's selectBackend (`CONTAINER_BACKEND`, else `controlplane` with
 * `MOLECULE_ORG_ID` set, else `docker`; blank values count as unset). Everything after start-up reads
 * `config.backend.selection`, so the check on controlplane mode and the backend that is built cannot disagree.
 */
function backendSelection(env: z.infer<typeof EnvSchema>) {
  try {
    return selectBackend({
      CONTAINER_BACKEND: env.CONTAINER_BACKEND,
      MOLECULE_ORG_ID: env.MOLECULE_ORG_ID,
      FLY_API_TOKEN: env.FLY_API_TOKEN,
      FLY_WORKSPACE_APP: env.FLY_WORKSPACE_APP,
      FLY_REGION: env.FLY_REGION,
      CP_PROVISION_URL: env.CP_PROVISION_URL,
    });
  } catch (error) {
    if (error instanceof BackendSelectionError) throw new ConfigError(error.message);
    throw error;
  }
}

function shape(env: z.infer<typeof EnvSchema>) {
  /**
   * Workspaces the platform runs itself on Docker register `http://127.0.0.1:<port>` or bridge addresses, so with
   * the docker backend (explicit, or the default when MOLECULE_ORG_ID is unset) both agent-URL relaxations default
   * to true. Operators exposing the platform to remote agents should set both to false.
   */
  const selection = backendSelection(env);
  const dockerBackend = selection.backend === "docker";
  const flag = (value: "true" | "false" | undefined) =>
    value === undefined ? dockerBackend : value === "true";
  /**
   * publicUrl: how workspaces reach this platform. Default: loopback on PORT for host networking, else the Docker
   * host as seen from a bridge network (the docker backend maps host.docker.internal to the host gateway).
   */
  const base = serviceConfig(env, env.PLATFORM_URL ?? dockerHostUrl(env.WORKSPACE_NETWORK, env.PORT));
  return {
    ...base,
    operations: { ...base.operations, deadlinesMs: env.OPERATION_DEADLINES },
    auth: { adminToken: env.ADMIN_TOKEN },
    secrets: {
      key: env.SECRETS_ENCRYPTION_KEY,
      keyVersion: env.SECRETS_ENCRYPTION_KEY_VERSION,
      oldKeys: env.SECRETS_ENCRYPTION_OLD_KEYS,
    },
    org: { id: env.MOLECULE_ORG_ID || "org_local", saas: env.MOLECULE_ORG_ID !== "" },
    backend: {
      selection,
      flyBaseUrl: env.FLY_API_BASE_URL,
      flyFallbackRegions: env.FLY_FALLBACK_REGIONS,
      flyWaitDeadlineMs: env.FLY_WAIT_DEADLINE_SECONDS * 1000,
    },
    /** The control plane, for the controlplane backend. The token and key never reach a log line. */
    controlPlane: {
      url: env.CP_PROVISION_URL ?? DEFAULT_CP_PROVISION_URL,
      tenantToken: env.CP_TENANT_TOKEN,
      signingKey: env.PROVISION_SHARED_SECRET,
      startupWaitMs: env.CP_STARTUP_WAIT_SECONDS * 1000,
      image: env.MOLECULE_IMAGE ?? null,
    },
    workspaces: {
      allowedRuntimes: env.ALLOWED_RUNTIMES,
      imagePrefix: env.WORKSPACE_IMAGE_PREFIX,
      imageTag: env.WORKSPACE_IMAGE_TAG,
      network: env.WORKSPACE_NETWORK,
      pullTimeoutMs: env.IMAGE_PULL_TIMEOUT_SECONDS * 1000,
      /** Agents sharing the host's network cannot all listen on one port: each picks a free one. */
      env: env.WORKSPACE_NETWORK === "host" ? { AGENT_PORT: "0" } : ({} as Record<string, string>),
    },
    liveness: {
      staleAfterMs: env.HEARTBEAT_STALE_AFTER * 1000,
      redeployOnlineTimeoutMs: env.REDEPLOY_ONLINE_TIMEOUT_SECONDS * 1000,
      sweepIntervalMs: env.STATUS_SWEEP_INTERVAL * 1000,
    },
    idle: { suspendAfterMs: env.IDLE_SUSPEND_AFTER ?? null },
    a2a: {
      timeoutMs: env.A2A_TIMEOUT_SECONDS * 1000,
      wakeTimeoutMs: env.A2A_WAKE_TIMEOUT_SECONDS * 1000,
      maxRequestBytes: env.A2A_MAX_REQUEST_BYTES,
      maxResponseBytes: env.A2A_MAX_RESPONSE_BYTES,
    },
    agentUrls: {
      allowInsecure: flag(env.ALLOW_INSECURE_AGENT_URLS),
      allowPrivate: flag(env.ALLOW_PRIVATE_AGENT_URLS),
    },
    backups: backupSettings(env),
    /** Per credential, per process (docs/operations.md): with N replicas a credential may make N times as many. */
    rateLimits: {
      api: env.RATE_LIMIT_API_PER_MINUTE,
      agent: env.RATE_LIMIT_AGENT_PER_MINUTE,
      a2a: env.RATE_LIMIT_A2A_PER_MINUTE,
      maxKeys: base.rateLimitMaxKeys,
    },
  };
}

/**
 * Backups are on when TENANT_BACKUP_S3_PREFIX is set. Reports go to TENANT_BACKUP_REPORT_URL, by default the
 * control plane's (CP_PROVISION_URL + /cp/tenants/backup-report), signed with the tenant's credential: they are sent
 * only by a tenant that has one (controlplane mode). The S3 credentials are the pair given here or the AWS SDK's
 * default chain (a standalone platform's task role or environment; a container on the control plane's EC2 cannot reach
 * its instance profile, so the control plane hands its tenants the pair).
 */
function backupSettings(env: z.infer<typeof EnvSchema>) {
  const target = parseS3Prefix(env.TENANT_BACKUP_S3_PREFIX);
  if (!target) return null;
  const cpBase = (env.CP_PROVISION_URL ?? DEFAULT_CP_PROVISION_URL).replace(/\/+$/, "");
  return {
    target,
    intervalMs: env.TENANT_BACKUP_INTERVAL,
    pgFormat: env.TENANT_BACKUP_FORMAT,
    reportUrl: env.TENANT_BACKUP_REPORT_URL ?? `${cpBase}${BACKUP_REPORT_PATH}`,
    searchPath: env.PATH,
    s3: {
      region: env.TENANT_BACKUP_S3_REGION,
      endpoint: env.TENANT_BACKUP_S3_ENDPOINT ?? null,
      credentials:
        env.TENANT_BACKUP_S3_ACCESS_KEY_ID && env.TENANT_BACKUP_S3_SECRET_ACCESS_KEY
          ? {
              accessKeyId: env.TENANT_BACKUP_S3_ACCESS_KEY_ID,
              secretAccessKey: env.TENANT_BACKUP_S3_SECRET_ACCESS_KEY,
            }
          : null,
    },
  };
}

/**
 * A tenant in controlplane mode holds its control-plane credential and signing key, and no cloud credentials at
 * all: in SaaS mode only the control plane holds them. Names only: a value is never echoed.
 */
function checkControlPlaneMode(config: TenantConfig, env: Record<string, string | undefined>): void {
  const held = CLOUD_CREDENTIAL_VARIABLES.filter((name) => (env[name] ?? "") !== "");
  if (held.length > 0) {
    throw new ConfigError(
      `a tenant in controlplane mode must not hold cloud credentials; remove ${held.join(", ")} from its environment (the control plane alone holds Fly and AWS credentials)`,
    );
  }
  if (!config.controlPlane.tenantToken) {
    throw new ConfigError(
      "CP_TENANT_TOKEN is required in controlplane mode (CONTAINER_BACKEND=controlplane, or MOLECULE_ORG_ID set)",
    );
  }
  if (!config.controlPlane.signingKey) {
    throw new ConfigError(
      "PROVISION_SHARED_SECRET is required in controlplane mode (CONTAINER_BACKEND=controlplane, or MOLECULE_ORG_ID set)",
    );
  }
}

/** Reads the environment once; a bad value stops start-up with one line naming the variable. */
export function loadConfig(env: Record<string, string | undefined>): TenantConfig {
  const values = parseEnv(EnvSchema, env);
  const config = shape(values);
  if (config.backend.selection.backend === "controlplane") checkControlPlaneMode(config, env);
  if (Boolean(values.TENANT_BACKUP_S3_ACCESS_KEY_ID) !== Boolean(values.TENANT_BACKUP_S3_SECRET_ACCESS_KEY)) {
    throw new ConfigError(
      "TENANT_BACKUP_S3_ACCESS_KEY_ID and TENANT_BACKUP_S3_SECRET_ACCESS_KEY are set together (or neither: the AWS SDK's default credentials, e.g. an instance profile)",
    );
  }
  if (isStrictEnvironment(config.environment) && !config.auth.adminToken) {
    throw new ConfigError(`ADMIN_TOKEN is required when MOLECULE_ENV=${config.environment}`);
  }
  if (isStrictEnvironment(config.environment) && !config.secrets.key) {
    throw new ConfigError(`SECRETS_ENCRYPTION_KEY is required when MOLECULE_ENV=${config.environment}`);
  }
  return config;
}

import { DEFAULT_WORKSPACE_NETWORK } from "@molecule/provisioner-core";
import {
  ConfigError,
  dockerHostUrl,
  isStrictEnvironment,
  parseEnv,
  serviceConfig,
  serviceEnv,
} from "@molecule/service-kit/config";
import { z } from "zod";

export { ConfigError };

function isKey(text: string): boolean {
  if (/^[0-9a-f]{64}$/i.test(text)) return true;
  return /^[A-Za-z0-9+/_-]+={0,2}$/.test(text) && Buffer.from(text, "base64").length === 32;
}

const EnvSchema = z.object({
  ...serviceEnv({ port: 8090, dataDir: "./.data/control-plane" }),
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
  CP_WORKSPACE_BACKEND: z.enum(["docker", "flyio"]).default("docker"),
  CP_TENANT_BACKEND: z.enum(["docker", "external"]).default("docker"),
  TENANT_URL_TEMPLATE: z
    .string()
    .refine(
      (text) => URL.canParse(text.replaceAll("{slug}", "slug")),
      "TENANT_URL_TEMPLATE must be a URL, with {slug} where the org's slug goes",
    )
    .optional(),
  TENANT_IMAGE: z.string().default("molecule/tenant-platform:latest"),
  TENANT_NETWORK: z.enum(["host", "bridge"]).default("bridge"),
  WORKSPACE_IMAGE_PREFIX: z.string().default("molecule/workspace-"),
  WORKSPACE_IMAGE_TAG: z.string().default("latest"),
  WORKSPACE_NETWORK: z.string().default(DEFAULT_WORKSPACE_NETWORK),
  IMAGE_PULL_TIMEOUT_SECONDS: z.coerce.number().positive().default(120),
  FLY_API_TOKEN: z.string().optional(),
  FLY_WORKSPACE_APP: z.string().optional(),
  FLY_REGION: z.string().default("ord"),
  FLY_API_BASE_URL: z.string().url().default("https://api.machines.dev"),
});

export type ControlPlaneConfig = ReturnType<typeof shape>;

function shape(env: z.infer<typeof EnvSchema>) {
  return {
    /**
     * publicUrl: how tenants reach the control plane (injected as their CP_PROVISION_URL). Default: loopback for
     * host-networked tenants, else the Docker host as seen from a bridge network.
     */
    ...serviceConfig(env, env.CP_PUBLIC_URL ?? dockerHostUrl(env.TENANT_NETWORK, env.PORT)),
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
      /** `external`: the org's tenant URL, `{slug}` replaced (tenants are started by the operator). */
      urlTemplate: env.TENANT_URL_TEMPLATE ?? null,
    },
  };
}

/** Reads the environment once; a bad value stops start-up with one line naming the variable. */
export function loadConfig(env: Record<string, string | undefined>): ControlPlaneConfig {
  const config = shape(parseEnv(EnvSchema, env));
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
  return config;
}

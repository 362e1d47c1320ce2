import {
  createDockerProvisioner,
  createFlyProvisioner,
  type Provisioner,
  type RuntimeStatus,
} from "@molecule/provisioner-core";
import type { Logger } from "pino";
import { ConfigError, type ControlPlaneConfig } from "./config.ts";
import type { TenantBackend } from "./tenants/backend.ts";
import { createDockerTenantBackend } from "./tenants/docker.ts";

/** The workspace backend every org's workspaces run on (CP_WORKSPACE_BACKEND), built once from config. */
export function buildWorkspaceProvisioner(config: ControlPlaneConfig, logger: Logger): Provisioner {
  const backend = config.workspaceBackend;
  switch (backend.name) {
    case "docker":
      return createDockerProvisioner({
        deployment: config.deployment,
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
        imagePrefix: backend.imagePrefix,
        imageTag: backend.imageTag,
        logger: logger.child({ component: "flyio" }),
      });
    case "ec2":
      throw new ConfigError("CP_WORKSPACE_BACKEND=ec2 is not available in this build yet");
  }
}

/** The backend that runs one tenant platform per org (CP_TENANT_BACKEND). */
export function buildTenantBackend(config: ControlPlaneConfig, logger: Logger): TenantBackend {
  switch (config.tenantBackend.name) {
    case "docker":
      return createDockerTenantBackend({
        image: config.tenantBackend.image,
        canaryImage: config.tenantBackend.canaryImage,
        network: config.tenantBackend.network,
        deployment: config.deployment,
        logger: logger.child({ component: "tenants" }),
      });
    case "external":
      return createExternalTenantBackend(config.tenantBackend.urlTemplate ?? "");
    case "ec2":
      throw new ConfigError("CP_TENANT_BACKEND=ec2 is not available in this build yet");
  }
}

/**
 * CP_TENANT_BACKEND=external: the operator starts each org's tenant platform (with the org id, the tenant
 * credential and admin token from the create answer, and the org's signing key); the control plane runs nothing and
 * owns nothing. The org becomes `ready` when that tenant reports its boot; its URL is TENANT_URL_TEMPLATE with
 * `{slug}` replaced.
 */
export function createExternalTenantBackend(urlTemplate: string): TenantBackend {
  return {
    name: "external",
    async provision(spec, _handle, ctx) {
      const url = urlTemplate.replaceAll("{slug}", spec.slug);
      ctx?.step?.("tenant_external", "started by the operator");
      return { handle: { backend: "external" }, url };
    },
    async destroy() {},
    async status(): Promise<RuntimeStatus> {
      return { state: "unknown", detail: "the tenant is started by the operator" };
    },
    async listManaged() {
      return [];
    },
  };
}

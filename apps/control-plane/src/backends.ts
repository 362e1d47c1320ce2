import { createDockerProvisioner, createFlyProvisioner, type Provisioner } from "@molecule/provisioner-core";
import type { Logger } from "pino";
import type { ControlPlaneConfig } from "./config.ts";
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
  }
}

/** The backend that runs one tenant platform per org (CP_TENANT_BACKEND). */
export function buildTenantBackend(config: ControlPlaneConfig, logger: Logger): TenantBackend {
  switch (config.tenantBackend.name) {
    case "docker":
      return createDockerTenantBackend({
        image: config.tenantBackend.image,
        network: config.tenantBackend.network,
        deployment: config.deployment,
        logger: logger.child({ component: "tenants" }),
      });
  }
}

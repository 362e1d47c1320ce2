import type { TenantRuntimeConfig } from "@molecule/contracts";
import {
  type BackendSelection,
  type ContainerResolver,
  ControlPlaneClient,
  createContainerResolver,
  createControlPlaneProvisioner,
  createDockerProvisioner,
  createFlyProvisioner,
  isUserDefinedNetwork,
  type Provisioner,
} from "@molecule/provisioner-core";
import type { Logger } from "pino";
import type { TenantConfig } from "./config.ts";

/** Which backend this configuration selected (loadConfig decides it once, with selectBackend). */
export function selectedBackend(config: TenantConfig): BackendSelection {
  return config.backend.selection;
}

function controlPlaneCredentials(config: TenantConfig) {
  const { tenantToken, signingKey, url } = config.controlPlane;
  // loadConfig refuses controlplane mode without them; this guards a config built some other way
  if (!tenantToken || !signingKey) {
    throw new Error("controlplane mode needs CP_TENANT_TOKEN and PROVISION_SHARED_SECRET");
  }
  return { baseUrl: url, tenantToken, signingKey };
}

/** The signed client for the tenant's own calls to the control plane (its configuration, boot events). */
export function buildControlPlaneClient(config: TenantConfig, logger: Logger): ControlPlaneClient {
  return new ControlPlaneClient({
    ...controlPlaneCredentials(config),
    logger: logger.child({ component: "controlplane" }),
  });
}

/**
 * The one place the backend is built from config. The controlplane backend also needs what the control plane
 * said at start-up (GET /cp/tenants/config): the org and its workspace backend's capabilities.
 */
export function buildProvisioner(
  config: TenantConfig,
  logger: Logger,
  runtime?: TenantRuntimeConfig,
): Provisioner {
  const selection = selectedBackend(config);
  switch (selection.backend) {
    case "docker":
      return createDockerProvisioner({
        deployment: config.deployment,
        environment: config.environment,
        imagePrefix: config.workspaces.imagePrefix,
        imageTag: config.workspaces.imageTag,
        network: config.workspaces.network,
        pullTimeoutMs: config.workspaces.pullTimeoutMs,
        logger: logger.child({ component: "docker" }),
      });
    case "flyio":
      return createFlyProvisioner({
        apiToken: selection.flyApiToken,
        app: selection.flyWorkspaceApp,
        region: selection.flyRegion,
        fallbackRegions: config.backend.flyFallbackRegions,
        baseUrl: config.backend.flyBaseUrl,
        waitDeadlineMs: config.backend.flyWaitDeadlineMs,
        deployment: config.deployment,
        environment: config.environment,
        imagePrefix: config.workspaces.imagePrefix,
        imageTag: config.workspaces.imageTag,
        logger: logger.child({ component: "flyio" }),
      });
    case "controlplane":
      if (!runtime)
        throw new Error("the controlplane backend needs the tenant configuration from the control plane");
      return createControlPlaneProvisioner({
        ...controlPlaneCredentials(config),
        orgId: runtime.org_id,
        capabilities: runtime.capabilities,
        logger: logger.child({ component: "controlplane" }),
      });
  }
}

/**
 * On a user-defined Docker network agents are addressed by container name (`ws-<id>`), which only Docker's DNS
 * knows; a platform running on the host asks the engine instead. Other backends and networks: the system resolver.
 */
export function buildAgentHostResolver(config: TenantConfig): ContainerResolver | undefined {
  if (selectedBackend(config).backend !== "docker") return undefined;
  if (!isUserDefinedNetwork(config.workspaces.network)) return undefined;
  return createContainerResolver(config.workspaces.network);
}

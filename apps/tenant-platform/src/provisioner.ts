import {
  createDockerProvisioner,
  createFlyProvisioner,
  type Provisioner,
  selectBackend,
} from "@molecule/provisioner-core";
import type { Logger } from "pino";
import type { TenantConfig } from "./config.ts";

/** The one place the backend is chosen (DESIGN.md's table) and built from config. */
export function buildProvisioner(config: TenantConfig, logger: Logger): Provisioner {
  const selection = selectBackend({
    CONTAINER_BACKEND: config.backend.requested,
    MOLECULE_ORG_ID: config.backend.orgIdSet ? config.org.id : undefined,
    FLY_API_TOKEN: config.backend.flyApiToken,
    FLY_WORKSPACE_APP: config.backend.flyApp,
    FLY_REGION: config.backend.flyRegion,
    CP_PROVISION_URL: config.backend.cpProvisionUrl,
  });
  switch (selection.backend) {
    case "docker":
      return createDockerProvisioner({
        deployment: config.deployment,
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
        imagePrefix: config.workspaces.imagePrefix,
        imageTag: config.workspaces.imageTag,
        logger: logger.child({ component: "flyio" }),
      });
    case "controlplane":
      throw new Error(
        "CONTAINER_BACKEND=controlplane (or MOLECULE_ORG_ID set) needs the control plane, which this build does not include yet",
      );
  }
}

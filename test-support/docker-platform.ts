import { createDockerProvisioner, resourceName } from "@molecule/provisioner-core";
import type { PlatformDeps } from "@molecule/tenant-platform/deps";
import type Dockerode from "dockerode";
import { removeDeployment } from "../packages/provisioner-core/src/docker/test-support.ts";
import { createTestPlatform, type TestPlatform } from "./platform.ts";
import { waitFor } from "./wait.ts";

export { removeDeployment };

/**
 * The tenant platform in process on the real Docker engine with the locally built echo image. Host networking unless
 * `network` says otherwise; agents heartbeat every second and the sweep runs every second, so tests see changes fast.
 */
export async function createDockerTestPlatform(options: {
  docker: Dockerode;
  deployment: string;
  /** MOLECULE_ENV for the backend's labels and listing (none by default). */
  environment?: string;
  network?: string;
  workspaceEnv?: Record<string, string>;
  resolveAgentHost?: PlatformDeps["resolveAgentHost"];
  /** Settings over the test defaults (the org a control plane created for it and that org's admin token, say). */
  settings?: Partial<PlatformDeps["settings"]>;
  /** Runs the idle sweep on this interval once `listen()` has started the loops. */
  idleSweepIntervalMs?: number;
}): Promise<TestPlatform> {
  const { docker, deployment, network = "host" } = options;
  // The tag global-setup built (infra/build-workspace-image.sh reads the same variable): checkouts sharing one
  // engine can each run their own agent code.
  const image = { prefix: "molecule/workspace-", tag: process.env.WORKSPACE_IMAGE_TAG ?? "latest" };
  const provisioner = createDockerProvisioner({
    docker,
    deployment,
    ...(options.environment ? { environment: options.environment } : {}),
    imagePrefix: image.prefix,
    imageTag: image.tag,
    network,
  });
  return createTestPlatform(
    provisioner,
    {
      deployment,
      workspaceImage: image,
      workspaceEnv: options.workspaceEnv ?? { AGENT_PORT: "0", HEARTBEAT_INTERVAL_MS: "1000" },
      ...options.settings,
    },
    {
      sweepIntervalMs: 1_000,
      resolveAgentHost: options.resolveAgentHost,
      ...(options.idleSweepIntervalMs ? { idleSweepIntervalMs: options.idleSweepIntervalMs } : {}),
    },
  );
}

/** Waits for a workspace to reach `status`; on timeout says what was last seen and shows the container's log. */
export async function statusBecomes(platform: TestPlatform, docker: Dockerode, id: string, status: string) {
  let last: unknown;
  try {
    return await waitFor(`workspace ${id} to be ${status}`, async () => {
      const workspace = (await platform.call("GET", `/workspaces/${id}`)).body;
      last = workspace;
      return workspace.status === status ? workspace : undefined;
    });
  } catch (error) {
    const logs = await docker
      .getContainer(resourceName(id))
      .logs({ stdout: true, stderr: true, tail: 30 })
      .catch(() => "no container");
    throw new Error(
      `${(error as Error).message}\nlast seen: ${JSON.stringify(last)}\ncontainer log:\n${String(logs)}`,
    );
  }
}

/**
 * The docker backend: one named volume and one container per workspace on the local engine, both named
 * `resourceName(workspaceId)` and labelled with the workspace, org and deployment so every call can find and adopt
 * what an earlier (possibly crashed or concurrent) call made.
 */
import type Dockerode from "dockerode";
import { fixedAgentPort } from "../agent-address.ts";
import { ProvisionerError } from "../errors.ts";
import { assertWorkspaceId, LABELS, resourceName } from "../naming.ts";
import type {
  Capabilities,
  Handle,
  ManagedResource,
  ProvisionContext,
  Provisioner,
  RuntimeStatus,
  SuspendResult,
  WorkspaceRef,
  WorkspaceSpec,
} from "../provisioner.ts";
import { specScrubber } from "../scrub.ts";
import { tierLimits } from "../tiers.ts";
import { createDockerClient } from "./client.ts";
import {
  type DockerLogger,
  dockerCall,
  noopDockerLogger,
  pauseContainer,
  pullImage,
  removeContainer as removeContainerOn,
  removeVolume as removeVolumeOn,
  startContainer as startContainerOn,
  stopContainer as stopContainerOn,
  throwIfAborted,
  unpauseContainer,
} from "./engine.ts";
import { containerNetworking, ensureNetwork, isUserDefinedNetwork } from "./network.ts";
import {
  createOrAdoptContainerId,
  type DockerOwner,
  ensureOwnedVolume,
  findOwnedResources,
  inspectOwnedContainer,
  listManagedResources,
  ownedContainerStatus,
} from "./owned.ts";

export type { DockerLogger } from "./engine.ts";

export interface DockerProvisionerOptions {
  docker?: Dockerode;
  /** Every resource is labelled with it; `listManaged` returns only resources carrying it. */
  deployment: string;
  /**
   * MOLECULE_ENV: labelled on what this backend creates; `listManaged` leaves out resources labelled with another
   * environment (resources made before the label existed carry none and stay listed).
   */
  environment?: string;
  /** Image is `${imagePrefix}${spec.runtime}:${imageTag}`, e.g. `molecule/workspace-` + `echo` + `latest`. */
  imagePrefix: string;
  imageTag: string;
  /**
   * "host", Docker's default "bridge", or the name of a user-defined network (created when missing). On a
   * user-defined network each agent is told its address there, `AGENT_PUBLIC_URL=http://ws-<workspace id>:<port>`;
   * on `host` it is told to listen on loopback only, `AGENT_HOST=127.0.0.1` (see `agentEnv`).
   */
  network: string;
  /** Bound on pulling a missing image (default 120 s). */
  pullTimeoutMs?: number;
  /** Seconds a stop waits for the process before killing it (default 10). */
  stopTimeoutSeconds?: number;
  logger?: DockerLogger;
}

export const DOCKER_BACKEND = "docker";
export const WORKSPACE_MOUNT = "/workspace";
/** Env keys that are always redacted from logs, whether or not the caller listed them as secret. */
const ALWAYS_SECRET = ["WORKSPACE_BOOT_TOKEN"];
const REDACTED = "[redacted]";

export interface DockerHandle extends Handle {
  backend: typeof DOCKER_BACKEND;
  containerId: string;
  containerName: string;
  volumeName: string;
  image: string;
  /** On a user-defined network: where the platform reaches the agent (the container's name there). */
  agentUrl?: string;
}

/**
 * The address the backend assigns to a workspace's agent on a user-defined network: its container name, which only
 * that container answers to on the network. Undefined for `host` and `bridge` (the agent picks its own URL).
 */
export function assignedAgentUrl(
  network: string,
  workspaceId: string,
  env: Record<string, string>,
): string | undefined {
  if (!isUserDefinedNetwork(network)) return undefined;
  const port = fixedAgentPort(env);
  return port === undefined ? undefined : `http://${resourceName(workspaceId)}:${port}`;
}

/** Where agents sharing the host's network listen. */
export const LOOPBACK_AGENT_HOST = "127.0.0.1";

/**
 * What the backend tells every agent about its network, over whatever the spec's environment says: on a user-defined
 * network its address there (`AGENT_PUBLIC_URL`); on the host's network the address to listen on, loopback only
 * (`AGENT_HOST=127.0.0.1`), so the agent cannot be reached from other machines. Loopback is still shared with every
 * process on the host, other workspaces included: what keeps them out is the agent's inbound token.
 */
export function agentEnv(
  network: string,
  workspaceId: string,
  env: Record<string, string>,
): Record<string, string> {
  if (network === "host") return { ...env, AGENT_HOST: LOOPBACK_AGENT_HOST };
  const agentUrl = assignedAgentUrl(network, workspaceId, env);
  return agentUrl ? { ...env, AGENT_PUBLIC_URL: agentUrl } : env;
}

type Step = "image_ready" | "volume_ready" | "container_created" | "container_started" | "container_resumed";

/** Create options with secret env values replaced, safe to log. */
export function redactCreateOptions(
  options: Dockerode.ContainerCreateOptions,
  secretKeys: readonly string[],
): Dockerode.ContainerCreateOptions {
  const secret = new Set([...secretKeys, ...ALWAYS_SECRET]);
  const env = options.Env?.map((entry) => {
    const eq = entry.indexOf("=");
    const key = eq === -1 ? entry : entry.slice(0, eq);
    return secret.has(key) ? `${key}=${REDACTED}` : entry;
  });
  return { ...options, ...(env ? { Env: env } : {}) };
}

export function labelsFor(
  spec: Pick<WorkspaceSpec, "workspaceId" | "orgId" | "deployment" | "pool">,
): Record<string, string> {
  return {
    [LABELS.managed]: "true",
    [LABELS.workspaceId]: spec.workspaceId,
    [LABELS.orgId]: spec.orgId,
    [LABELS.deployment]: spec.deployment,
    ...(spec.pool ? { [LABELS.pool]: spec.pool } : {}),
  };
}

export function createDockerProvisioner(opts: DockerProvisionerOptions): Provisioner {
  const docker = opts.docker ?? createDockerClient();
  const log = opts.logger ?? noopDockerLogger;
  const pullTimeoutMs = opts.pullTimeoutMs ?? 120_000;
  const stopTimeout = opts.stopTimeoutSeconds ?? 10;
  const deploymentFilter = `${LABELS.deployment}=${opts.deployment}`;
  const labels = (spec: WorkspaceSpec) => ({
    ...labelsFor(spec),
    ...(opts.environment ? { [LABELS.environment]: opts.environment } : {}),
  });
  let hostCpus: number | undefined;

  const imageFor = (runtime: string) => `${opts.imagePrefix}${runtime}:${opts.imageTag}`;

  const call = dockerCall;

  /** A workspace's resources in this deployment. */
  const owner = (workspaceId: string): DockerOwner => ({
    labels: { [LABELS.workspaceId]: workspaceId, [LABELS.deployment]: opts.deployment },
    noun: "workspace",
  });

  function validate(spec: WorkspaceSpec): void {
    assertWorkspaceId(spec.workspaceId);
    if (spec.deployment !== opts.deployment) {
      throw new ProvisionerError(
        "invalid_spec",
        `spec deployment "${spec.deployment}" does not match this docker backend's deployment "${opts.deployment}"`,
        false,
      );
    }
    if (!/^[a-z0-9][a-z0-9._-]*$/.test(spec.runtime)) {
      throw new ProvisionerError(
        "invalid_spec",
        `runtime "${spec.runtime}" is not a valid image name fragment`,
        false,
      );
    }
  }

  const ensureVolume = (spec: WorkspaceSpec) =>
    ensureOwnedVolume(docker, resourceName(spec.workspaceId), labels(spec), owner(spec.workspaceId));

  async function nanoCpus(cpus: number): Promise<number> {
    if (hostCpus === undefined) {
      const info = await call("info", () => docker.info() as Promise<{ NCPU?: number }>);
      hostCpus = info?.NCPU ?? cpus;
    }
    if (cpus > hostCpus) {
      log.warn({ requested: cpus, available: hostCpus }, "docker: tier asks for more CPUs than the host has");
    }
    return Math.round(Math.min(cpus, hostCpus) * 1e9);
  }

  async function createOptions(spec: WorkspaceSpec, image: string, volume: string) {
    const limits = tierLimits(spec.tier);
    const memory = limits.memoryMb * 1024 * 1024;
    const name = resourceName(spec.workspaceId);
    const env = agentEnv(opts.network, spec.workspaceId, spec.env);
    const networking = containerNetworking(opts.network, name);
    const options: Dockerode.ContainerCreateOptions & { name: string; Image: string } = {
      name,
      Image: image,
      Env: Object.entries(env).map(([key, value]) => `${key}=${value}`),
      Labels: labels(spec),
      ...(networking.networkingConfig ? { NetworkingConfig: networking.networkingConfig } : {}),
      HostConfig: {
        Memory: memory,
        MemorySwap: memory,
        NanoCpus: await nanoCpus(limits.cpus),
        PidsLimit: limits.pidsLimit,
        Privileged: false,
        CapDrop: ["ALL"],
        SecurityOpt: ["no-new-privileges"],
        IpcMode: "private",
        // On a bridge network the platform on the host is reachable as host.docker.internal (Docker ≥ 20.10).
        ...networking.hostConfig,
        Mounts: [{ Type: "volume", Source: volume, Target: WORKSPACE_MOUNT, ReadOnly: false }],
        RestartPolicy: { Name: "no" },
        // docker-init as PID 1: signals reach the agent (stop is prompt) and zombies are reaped.
        Init: true,
      },
    };
    return options;
  }

  /** Creates the container, or adopts the one an earlier or concurrent call made. */
  async function ensureContainer(
    spec: WorkspaceSpec,
    image: string,
    volume: string,
  ): Promise<{ id: string; image: string; created: boolean }> {
    const options = await createOptions(spec, image, volume);
    log.info(
      { workspaceId: spec.workspaceId, options: redactCreateOptions(options, spec.secretKeys) },
      "docker: creating container",
    );
    return createOrAdoptContainerId(docker, owner(spec.workspaceId), options);
  }

  const startContainer = (name: string, signal: AbortSignal | undefined) =>
    startContainerOn(docker, name, signal);

  /**
   * Images this backend has found on the engine (or pulled): a later provision does not ask again, one engine request
   * fewer before its container. One removed since is found by the container create's 404, which forgets it and goes
   * through the steps again asking (and pulling). An image never found here is asked for every time, so a missing one
   * still leaves nothing made.
   */
  const imagesFound = new Set<string>();

  /** Whether the image is on the engine (an inspect, unless it was found before), without pulling. */
  async function imagePresent(image: string, signal: AbortSignal | undefined): Promise<boolean> {
    if (imagesFound.has(image)) return true;
    const found = await dockerCall("inspect image", () => docker.getImage(image).inspect(), [404], signal);
    if (found) imagesFound.add(image);
    return found !== undefined;
  }

  /**
   * Image, volume, container, running: creates only what is missing. Shared by provision and start. Every engine
   * request is on the path to a running agent, so what does not depend on each other goes together: the container and
   * image look-ups (the image's only until it was found once, see `imagesFound`) and the network; once the image is known to be there, the volume (its audit intent, then its
   * create) and, when there is no container yet, the container's audit intent. A missing image is pulled first, so
   * one that cannot be pulled still leaves nothing made. Each audit claim goes alongside the next engine request, and
   * nothing is inspected that the engine already said.
   */
  async function converge(spec: WorkspaceSpec, ctx: ProvisionContext | undefined): Promise<DockerHandle> {
    validate(spec);
    const step = (name: Step, detail?: string) => ctx?.step?.(name, detail);
    const name = resourceName(spec.workspaceId);
    const image = imageFor(spec.runtime);
    const signal = ctx?.signal;
    const audit = ctx?.audit;
    const volumeName = resourceName(spec.workspaceId);
    const makeVolume = async () => {
      await audit?.intent("volume", volumeName);
      return ensureVolume(spec);
    };

    throwIfAborted(signal, "provision");
    const assumed = imagesFound.has(image);
    const present = imagePresent(image, signal);
    // All settle before any error is reported, so nothing this attempt started is still under way after it ends.
    const looked = await Promise.allSettled([
      Promise.all([inspectOwnedContainer(docker, name, owner(spec.workspaceId)), present]).then(
        async ([found, imageThere]) => {
          if (!found && imageThere) await audit?.intent("container", name);
          return found;
        },
      ),
      present.then((found) => (found ? makeVolume() : null)),
      isUserDefinedNetwork(opts.network) ? ensureNetwork(docker, opts.network) : undefined,
    ]);
    for (const outcome of looked) if (outcome.status === "rejected") throw outcome.reason;
    const [existing, madeVolume] = looked.map((outcome) =>
      outcome.status === "fulfilled" ? outcome.value : undefined,
    ) as [Awaited<ReturnType<typeof inspectOwnedContainer>>, string | null];
    if (existing) {
      step("image_ready", `container exists (${existing.Config.Image})`);
    } else if (madeVolume !== null) {
      step("image_ready", `${image} present`);
    } else {
      log.info({ image }, "docker: pulling missing image");
      await pullImage(docker, image, { timeoutMs: pullTimeoutMs, signal, logger: log });
      imagesFound.add(image);
      step("image_ready", `${image} pulled`);
    }
    throwIfAborted(signal, "provision");
    // After a pull: the volume, and the container's intent when there is no container yet.
    const [volume] =
      madeVolume === null
        ? await Promise.all([makeVolume(), existing ? undefined : audit?.intent("container", name)])
        : [madeVolume];
    step("volume_ready", volume);
    throwIfAborted(signal, "provision");
    // Each claim (a database write) rides along with the next engine request; all are awaited before returning.
    const claims: Promise<void>[] = [];
    const claim = (kind: string, made: string, providerId: string) => {
      if (!audit) return;
      const claimed = audit.claim(kind, made, providerId);
      claimed.catch(() => {}); // observed below; never an unhandled rejection meanwhile
      claims.push(claimed);
    };
    claim("volume", volumeName, volume);
    let container: { id: string; image: string };
    let paused = false;
    try {
      if (!existing) {
        const made = await ensureContainer(spec, image, volume).catch((error: unknown) => {
          if (!(assumed && error instanceof ProvisionerError && error.code === "not_found")) throw error;
          // The image was taken to be there from an earlier provision; it may have been removed since.
          imagesFound.delete(image);
          return null;
        });
        if (!made) return converge(spec, ctx);
        claim("container", name, made.id);
        container = made;
        step("container_created", made.created ? made.id : `adopted ${made.id}`);
      } else {
        container = { id: existing.Id, image: existing.Config.Image };
        paused = existing.State.Paused;
        step("container_created", `adopted ${existing.Id}`);
      }
      throwIfAborted(signal, "provision");
      // A suspended workspace's container is paused (the engine counts it as running): it is thawed, not started.
      if (paused) {
        await unpauseContainer(docker, container.id, signal);
        step("container_resumed", container.id);
      } else {
        await startContainer(container.id, signal);
        step("container_started", container.id);
      }
    } finally {
      // A failed step still waits for the claims it started, and its error is the one reported.
      await Promise.allSettled(claims);
    }
    await Promise.all(claims);
    const agentUrl = assignedAgentUrl(opts.network, spec.workspaceId, spec.env);
    return {
      backend: DOCKER_BACKEND,
      containerId: container.id,
      containerName: name,
      volumeName: volume,
      image: container.image,
      ...(agentUrl ? { agentUrl } : {}),
    };
  }

  /**
   * A suspended workspace's paused container, thawed: the one engine look-up and the unpause are all a wake needs
   * (its image, volume and network are in use by it). Null when the container is not paused: `converge` decides.
   */
  async function resumePaused(
    spec: WorkspaceSpec,
    ctx: ProvisionContext | undefined,
  ): Promise<DockerHandle | null> {
    const name = resourceName(spec.workspaceId);
    const info = await inspectOwnedContainer(docker, name, owner(spec.workspaceId));
    if (!info?.State.Paused) return null;
    await unpauseContainer(docker, info.Id, ctx?.signal);
    ctx?.step?.("container_resumed", info.Id);
    const agentUrl = assignedAgentUrl(opts.network, spec.workspaceId, spec.env);
    return {
      backend: DOCKER_BACKEND,
      containerId: info.Id,
      containerName: name,
      volumeName: name,
      image: info.Config.Image,
      ...(agentUrl ? { agentUrl } : {}),
    };
  }

  async function stopWorkspace(ref: WorkspaceRef, signal: AbortSignal | undefined): Promise<void> {
    const info = await inspectOwnedContainer(docker, resourceName(ref.workspaceId), owner(ref.workspaceId));
    if (!info) return;
    if (!info.State.Running && !info.State.Restarting && !info.State.Paused) return;
    await stopContainerOn(docker, info.Id, stopTimeout, signal);
  }

  /** Every container/volume of the workspace in this deployment: the named ones plus any labelled strays. */
  function findResources(workspaceId: string) {
    const name = resourceName(workspaceId);
    return findOwnedResources(docker, owner(workspaceId), { container: name, volume: name });
  }

  const removeContainer = (id: string, signal: AbortSignal | undefined) =>
    removeContainerOn(docker, id, signal);
  const removeVolume = (name: string, signal: AbortSignal | undefined) =>
    removeVolumeOn(docker, name, signal);

  const capabilities: Capabilities = { suspend: true };

  return {
    name: DOCKER_BACKEND,

    capabilities: () => ({ ...capabilities }),

    // Nothing the spec holds leaves in an error or a step detail, whatever the engine answered.
    provision(spec, _handle, ctx) {
      const scrub = specScrubber(spec);
      return scrub.run(() => converge(spec, scrub.context(ctx)));
    },

    // A missing container is recreated from the spec; the volume (and its data) is kept.
    start(spec, _handle, ctx) {
      const scrub = specScrubber(spec);
      return scrub.run(async () => {
        validate(spec);
        const scrubbed = scrub.context(ctx);
        if (scrubbed?.recreate) {
          const { containerIds } = await findResources(spec.workspaceId);
          for (const id of containerIds) await removeContainer(id, scrubbed.signal);
          scrubbed.step?.("container_removed", "recreating from the current spec");
        } else {
          const resumed = await resumePaused(spec, scrubbed);
          if (resumed) return resumed;
        }
        return converge(spec, scrubbed);
      });
    },

    async stop(ref, ctx) {
      assertWorkspaceId(ref.workspaceId);
      throwIfAborted(ctx?.signal, "stop");
      await stopWorkspace(ref, ctx?.signal);
    },

    async suspend(ref, ctx): Promise<SuspendResult> {
      assertWorkspaceId(ref.workspaceId);
      throwIfAborted(ctx?.signal, "suspend");
      // Paused, not stopped: the agent keeps its memory and resumes where it was (`start` unpauses it).
      const info = await inspectOwnedContainer(docker, resourceName(ref.workspaceId), owner(ref.workspaceId));
      if (info && (await pauseContainer(docker, info.Id, ctx?.signal))) {
        ctx?.step?.("container_paused", info.Id);
        return { suspended: true };
      }
      return { suspended: false, reason: "the workspace's container is not running; nothing to pause" };
    },

    async destroy(ref, ctx) {
      assertWorkspaceId(ref.workspaceId);
      throwIfAborted(ctx?.signal, "destroy");
      const { containerIds, volumeNames } = await findResources(ref.workspaceId);
      for (const id of containerIds) await removeContainer(id, ctx?.signal);
      for (const name of volumeNames) await removeVolume(name, ctx?.signal);
      if (containerIds.length + volumeNames.length > 0) {
        log.info({ workspaceId: ref.workspaceId, containerIds, volumeNames }, "docker: destroyed workspace");
      }
    },

    async status(ref): Promise<RuntimeStatus> {
      const name = resourceName(ref.workspaceId);
      return ownedContainerStatus(docker, name, owner(ref.workspaceId));
    },

    // Only workspace resources: other managed things of the deployment on this engine (the control plane's tenant
    // containers) carry no workspace id.
    listManaged: (): Promise<ManagedResource[]> =>
      listManagedResources(
        docker,
        [`${LABELS.managed}=true`, deploymentFilter, LABELS.workspaceId],
        opts.environment,
      ),
  };
}

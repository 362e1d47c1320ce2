/**
 * The docker backend: one named volume and one container per workspace on the local engine, both named
 * `resourceName(workspaceId)` and labelled with the workspace, org and deployment so every call can find and adopt
 * what an earlier (possibly crashed or concurrent) call made.
 */
import Dockerode from "dockerode";
import { ProvisionerError } from "../errors.ts";
import { LABELS, resourceName } from "../naming.ts";
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
import { tierLimits } from "../tiers.ts";
import { dockerReason, dockerStatusCode, toProvisionerError } from "./errors.ts";

/** pino-compatible: fields first, then the message. */
export interface DockerLogger {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

export interface DockerProvisionerOptions {
  docker?: Dockerode;
  /** Every resource is labelled with it; `listManaged` returns only resources carrying it. */
  deployment: string;
  /** Image is `${imagePrefix}${spec.runtime}:${imageTag}`, e.g. `molecule/workspace-` + `echo` + `latest`. */
  imagePrefix: string;
  imageTag: string;
  /** A docker network name, or "host". */
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
}

type Step = "image_ready" | "volume_ready" | "container_created" | "container_started";

const noopLogger: DockerLogger = { info() {}, warn() {}, error() {} };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

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
  spec: Pick<WorkspaceSpec, "workspaceId" | "orgId" | "deployment">,
): Record<string, string> {
  return {
    [LABELS.managed]: "true",
    [LABELS.workspaceId]: spec.workspaceId,
    [LABELS.orgId]: spec.orgId,
    [LABELS.deployment]: spec.deployment,
  };
}

export function createDockerProvisioner(opts: DockerProvisionerOptions): Provisioner {
  const docker = opts.docker ?? new Dockerode();
  const log = opts.logger ?? noopLogger;
  const pullTimeoutMs = opts.pullTimeoutMs ?? 120_000;
  const stopTimeout = opts.stopTimeoutSeconds ?? 10;
  const deploymentFilter = `${LABELS.deployment}=${opts.deployment}`;
  let hostCpus: number | undefined;

  const imageFor = (runtime: string) => `${opts.imagePrefix}${runtime}:${opts.imageTag}`;

  function checkSignal(signal: AbortSignal | undefined, op: string): void {
    if (signal?.aborted) {
      throw new ProvisionerError("timeout", `docker ${op} aborted`, true, {
        reason: signal.reason instanceof Error ? signal.reason.message : String(signal.reason),
      });
    }
  }

  /** Runs a docker call, mapping its failure; `ok` lists status codes that count as success (returns undefined). */
  async function call<T>(op: string, fn: () => Promise<T>, ok: number[] = []): Promise<T | undefined> {
    try {
      return await fn();
    } catch (error) {
      const status = dockerStatusCode(error);
      if (status !== undefined && ok.includes(status)) return undefined;
      throw toProvisionerError(op, error);
    }
  }

  function ownedBy(labels: Record<string, string> | undefined, workspaceId: string): boolean {
    return labels?.[LABELS.workspaceId] === workspaceId && labels?.[LABELS.deployment] === opts.deployment;
  }

  function notOurs(kind: string, name: string, labels: Record<string, string> | undefined): ProvisionerError {
    return new ProvisionerError(
      "conflict",
      `a ${kind} named ${name} exists but belongs to workspace ${labels?.[LABELS.workspaceId] ?? "(none)"} of deployment ${labels?.[LABELS.deployment] ?? "(none)"}`,
      false,
      { kind, name },
    );
  }

  function validate(spec: WorkspaceSpec): void {
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

  async function inspectContainer(name: string): Promise<Dockerode.ContainerInspectInfo | undefined> {
    return call("inspect container", () => docker.getContainer(name).inspect(), [404]);
  }

  /** Pulls `image`, bounded by the pull timeout and the caller's signal; never hangs. */
  async function pull(image: string, signal: AbortSignal | undefined): Promise<void> {
    const controller = new AbortController();
    const onAbort = () => controller.abort(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    let timer: NodeJS.Timeout | undefined;
    let stream: NodeJS.ReadableStream | undefined;
    const work = (async () => {
      stream = (await docker.pull(image, { abortSignal: controller.signal })) as NodeJS.ReadableStream;
      await new Promise<void>((resolve, reject) => {
        docker.modem.followProgress(stream as NodeJS.ReadableStream, (error: Error | null) =>
          error ? reject(error) : resolve(),
        );
      });
    })();
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`pull timed out after ${Math.round(pullTimeoutMs / 1000)} s`)),
        pullTimeoutMs,
      );
      controller.signal.addEventListener("abort", () => reject(new Error("pull aborted")), { once: true });
    });
    try {
      await Promise.race([work, deadline]);
    } catch (error) {
      controller.abort();
      (stream as { destroy?: () => void } | undefined)?.destroy?.();
      work.catch(() => {});
      const reason = dockerReason(error);
      log.warn({ image, reason }, "docker: image pull failed");
      if (signal?.aborted) {
        throw new ProvisionerError("timeout", `pull of image ${image} was aborted by the caller`, true, {
          image,
        });
      }
      throw new ProvisionerError(
        "image_unavailable",
        `image ${image} is not present on the docker engine and could not be pulled: ${reason}`,
        false,
        { image },
      );
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  async function ensureImage(image: string, signal: AbortSignal | undefined): Promise<"present" | "pulled"> {
    const found = await call("inspect image", () => docker.getImage(image).inspect(), [404]);
    if (found) return "present";
    log.info({ image }, "docker: pulling missing image");
    await pull(image, signal);
    return "pulled";
  }

  async function ensureVolume(spec: WorkspaceSpec): Promise<string> {
    const name = resourceName(spec.workspaceId);
    // Creating a volume whose name exists returns the existing one: adopt it, after checking it is ours.
    await call("create volume", () => docker.createVolume({ Name: name, Labels: labelsFor(spec) }));
    const info = await call("inspect volume", () => docker.getVolume(name).inspect());
    if (!ownedBy(info?.Labels ?? undefined, spec.workspaceId))
      throw notOurs("volume", name, info?.Labels ?? undefined);
    return name;
  }

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
    const options: Dockerode.ContainerCreateOptions = {
      name: resourceName(spec.workspaceId),
      Image: image,
      Env: Object.entries(spec.env).map(([key, value]) => `${key}=${value}`),
      Labels: labelsFor(spec),
      HostConfig: {
        Memory: memory,
        MemorySwap: memory,
        NanoCpus: await nanoCpus(limits.cpus),
        PidsLimit: limits.pidsLimit,
        Privileged: false,
        CapDrop: ["ALL"],
        SecurityOpt: ["no-new-privileges"],
        IpcMode: "private",
        NetworkMode: opts.network,
        // On a bridge network the platform on the host is reachable as host.docker.internal (Docker ≥ 20.10).
        ...(opts.network === "host" ? {} : { ExtraHosts: ["host.docker.internal:host-gateway"] }),
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
  ): Promise<{ info: Dockerode.ContainerInspectInfo; created: boolean }> {
    const name = resourceName(spec.workspaceId);
    const options = await createOptions(spec, image, volume);
    log.info(
      { workspaceId: spec.workspaceId, options: redactCreateOptions(options, spec.secretKeys) },
      "docker: creating container",
    );
    try {
      await docker.createContainer(options);
      const info = await inspectContainer(name);
      if (info) return { info, created: true };
    } catch (error) {
      if (dockerStatusCode(error) !== 409) throw toProvisionerError("create container", error);
    }
    // 409: the name is taken. A concurrent create may still be registering it, so a 404 is retried briefly.
    for (let attempt = 0; attempt < 20; attempt++) {
      const info = await inspectContainer(name);
      if (info) {
        if (!ownedBy(info.Config.Labels, spec.workspaceId))
          throw notOurs("container", name, info.Config.Labels);
        return { info, created: false };
      }
      await sleep(100);
    }
    throw new ProvisionerError("conflict", `container ${name} exists but cannot be inspected`, true);
  }

  async function startContainer(name: string): Promise<void> {
    try {
      await docker.getContainer(name).start();
    } catch (error) {
      if (dockerStatusCode(error) === 304) return; // already running
      const info = await inspectContainer(name).catch(() => undefined);
      if (info?.State.Running) return; // a concurrent start won
      throw toProvisionerError("start container", error);
    }
  }

  /** Image, volume, container, running: creates only what is missing. Shared by provision and start. */
  async function converge(spec: WorkspaceSpec, ctx: ProvisionContext | undefined): Promise<DockerHandle> {
    validate(spec);
    const step = (name: Step, detail?: string) => ctx?.step?.(name, detail);
    const name = resourceName(spec.workspaceId);
    const image = imageFor(spec.runtime);
    const signal = ctx?.signal;

    checkSignal(signal, "provision");
    let existing = await inspectContainer(name);
    if (existing && !ownedBy(existing.Config.Labels, spec.workspaceId)) {
      throw notOurs("container", name, existing.Config.Labels);
    }
    if (existing) {
      step("image_ready", `container exists (${existing.Config.Image})`);
    } else {
      step("image_ready", `${image} ${await ensureImage(image, signal)}`);
    }
    checkSignal(signal, "provision");
    const volume = await ensureVolume(spec);
    step("volume_ready", volume);
    checkSignal(signal, "provision");
    if (!existing) {
      const { info, created } = await ensureContainer(spec, image, volume);
      existing = info;
      step("container_created", created ? info.Id : `adopted ${info.Id}`);
    } else {
      step("container_created", `adopted ${existing.Id}`);
    }
    checkSignal(signal, "provision");
    await startContainer(existing.Id);
    step("container_started", existing.Id);
    return {
      backend: DOCKER_BACKEND,
      containerId: existing.Id,
      containerName: name,
      volumeName: volume,
      image: existing.Config.Image,
    };
  }

  async function stopContainer(ref: WorkspaceRef): Promise<void> {
    const name = resourceName(ref.workspaceId);
    const info = await inspectContainer(name);
    if (!info) return;
    if (!ownedBy(info.Config.Labels, ref.workspaceId)) throw notOurs("container", name, info.Config.Labels);
    if (!info.State.Running && !info.State.Restarting && !info.State.Paused) return;
    await call("stop container", () => docker.getContainer(info.Id).stop({ t: stopTimeout }), [304, 404]);
  }

  /** Every container/volume of the workspace in this deployment: the named ones plus any labelled strays. */
  async function findResources(workspaceId: string) {
    const filters = { label: [deploymentFilter, `${LABELS.workspaceId}=${workspaceId}`] };
    const [containers, volumes] = await Promise.all([
      call("list containers", () => docker.listContainers({ all: true, filters })),
      call("list volumes", () => docker.listVolumes({ filters })),
    ]);
    const containerIds = new Set((containers ?? []).map((c) => c.Id));
    const volumeNames = new Set((volumes?.Volumes ?? []).map((v) => v.Name));
    const name = resourceName(workspaceId);
    const named = await inspectContainer(name);
    if (named) {
      if (!ownedBy(named.Config.Labels, workspaceId)) throw notOurs("container", name, named.Config.Labels);
      containerIds.add(named.Id);
    }
    const namedVolume = await call("inspect volume", () => docker.getVolume(name).inspect(), [404]);
    if (namedVolume) {
      if (!ownedBy(namedVolume.Labels ?? undefined, workspaceId)) {
        throw notOurs("volume", name, namedVolume.Labels ?? undefined);
      }
      volumeNames.add(name);
    }
    return { containerIds: [...containerIds], volumeNames: [...volumeNames] };
  }

  async function removeContainer(id: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await docker.getContainer(id).remove({ force: true });
        return;
      } catch (error) {
        const status = dockerStatusCode(error);
        if (status === 404) return;
        // 409: "removal already in progress" (a concurrent destroy): wait for it to finish.
        if (status !== 409 || attempt >= 50) throw toProvisionerError("remove container", error);
        await sleep(200);
      }
    }
  }

  async function removeVolume(name: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await docker.getVolume(name).remove();
        return;
      } catch (error) {
        const status = dockerStatusCode(error);
        if (status === 404) return;
        // 409: still in use by a container being removed.
        if (status !== 409 || attempt >= 50) {
          const mapped = toProvisionerError("remove volume", error);
          throw status === 409
            ? new ProvisionerError("conflict", mapped.message, true, mapped.details)
            : mapped;
        }
        await sleep(200);
      }
    }
  }

  function describeStopped(state: Dockerode.ContainerInspectInfo["State"]): string {
    if (state.Status === "created") return "container created but never started";
    const parts = [`exited with code ${state.ExitCode}`];
    if (state.OOMKilled) parts.push("(out of memory)");
    if (state.Error) parts.push(`: ${state.Error}`);
    if (state.FinishedAt && !state.FinishedAt.startsWith("0001-")) parts.push(`at ${state.FinishedAt}`);
    return parts.join(" ");
  }

  const capabilities: Capabilities = { suspend: false };

  return {
    name: DOCKER_BACKEND,

    capabilities: () => ({ ...capabilities }),

    provision: (spec, _handle, ctx) => converge(spec, ctx),

    // A missing container is recreated from the spec; the volume (and its data) is kept.
    async start(spec, _handle, ctx) {
      if (ctx?.recreate) {
        const { containerIds } = await findResources(spec.workspaceId);
        for (const id of containerIds) await removeContainer(id);
        ctx.step?.("container_removed", "recreating from the current spec");
      }
      return converge(spec, ctx);
    },

    async stop(ref, ctx) {
      checkSignal(ctx?.signal, "stop");
      await stopContainer(ref);
    },

    async suspend(ref, ctx): Promise<SuspendResult> {
      checkSignal(ctx?.signal, "suspend");
      await stopContainer(ref);
      return { suspended: false, reason: "docker backend cannot suspend; stopped instead" };
    },

    async destroy(ref, ctx) {
      checkSignal(ctx?.signal, "destroy");
      const { containerIds, volumeNames } = await findResources(ref.workspaceId);
      for (const id of containerIds) await removeContainer(id);
      for (const name of volumeNames) await removeVolume(name);
      if (containerIds.length + volumeNames.length > 0) {
        log.info({ workspaceId: ref.workspaceId, containerIds, volumeNames }, "docker: destroyed workspace");
      }
    },

    async status(ref): Promise<RuntimeStatus> {
      const name = resourceName(ref.workspaceId);
      let info: Dockerode.ContainerInspectInfo;
      try {
        info = await docker.getContainer(name).inspect();
      } catch (error) {
        if (dockerStatusCode(error) === 404) return { state: "missing", detail: `no container ${name}` };
        return { state: "unknown", detail: toProvisionerError("inspect container", error).message };
      }
      if (!ownedBy(info.Config.Labels, ref.workspaceId)) {
        return { state: "unknown", detail: notOurs("container", name, info.Config.Labels).message };
      }
      const state = info.State;
      if (state.Restarting) return { state: "starting", detail: "restarting" };
      if (state.Paused) return { state: "suspended", detail: "paused" };
      if (state.Running) return { state: "running" };
      if (state.Status === "removing") return { state: "stopped", detail: "being removed" };
      return { state: "stopped", detail: describeStopped(state) };
    },

    async listManaged(): Promise<ManagedResource[]> {
      const filters = { label: [`${LABELS.managed}=true`, deploymentFilter] };
      const [containers, volumes] = await Promise.all([
        call("list containers", () => docker.listContainers({ all: true, filters })),
        call("list volumes", () => docker.listVolumes({ filters })),
      ]);
      const out: ManagedResource[] = [];
      for (const c of containers ?? []) {
        out.push({
          kind: "container",
          id: c.Id,
          workspaceId: c.Labels[LABELS.workspaceId] ?? null,
          orgId: c.Labels[LABELS.orgId] ?? null,
          state: c.State,
        });
      }
      for (const v of volumes?.Volumes ?? []) {
        const labels = (v.Labels ?? {}) as Record<string, string>;
        out.push({
          kind: "volume",
          id: v.Name,
          workspaceId: labels[LABELS.workspaceId] ?? null,
          orgId: labels[LABELS.orgId] ?? null,
        });
      }
      return out;
    },
  };
}

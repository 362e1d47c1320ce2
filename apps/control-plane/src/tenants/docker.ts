/**
 * The docker tenant backend: one tenant platform container per org on the local engine, with its data (embedded
 * database, generated files) on a named volume. Names are deterministic (`tenant-<slug>`, `tenant-<slug>-data`) and
 * every resource is labelled with the org, the deployment, the environment and `molecule.kind=tenant`, so a provision
 * retried after a crash adopts the container, volume and port the first attempt made, and the reconciler lists only
 * this deployment's and this environment's tenants.
 *
 * The tenant in controlplane mode runs no containers itself: no docker socket is mounted, all capabilities are
 * dropped, the root filesystem is read-only (writable /data and /tmp only).
 *
 * Networking:
 * - `host`: the tenant listens on 127.0.0.1:<port> (a free port the backend picks); its workspaces, on the host
 *   network too, reach it there, and are told to pick their own agent ports (WORKSPACE_NETWORK=host).
 * - a user-defined network (any other name, e.g. `molecule`; created when missing): the tenant joins it under its
 *   container name, so workspaces on the same network reach it as PLATFORM_URL=http://tenant-<slug>:<port>; the port
 *   is also published on the host's 127.0.0.1 for the control plane.
 * - Docker's default `bridge` network (no DNS between containers): the port is published on the host's 127.0.0.1 and
 *   PLATFORM_URL is http://host.docker.internal:<port> (the host gateway). Workspaces reach it only where the
 *   gateway forwards to the host's loopback, so prefer a user-defined network.
 * On either bridge kind a loopback CP_PROVISION_URL is rewritten to host.docker.internal unless `cpUrlForTenant` is
 * given.
 */
import { createServer } from "node:net";
import { OrgSlug } from "@molecule/contracts";
import {
  auditedCreate,
  containerNetworking,
  createContainerUnlessTaken,
  createDockerClient,
  createOrAdoptContainer,
  type DockerLogger,
  type DockerOwner,
  dockerCall,
  ensureImage,
  ensureNetwork,
  ensureOwnedVolume,
  findOwnedResources,
  HOST_GATEWAY_NAME,
  inspectOwnedContainer,
  isUserDefinedNetwork,
  LABELS,
  listManagedResources,
  type ManagedResource,
  noopDockerLogger,
  ownedContainerStatus,
  ProvisionerError,
  type RuntimeStatus,
  redactCreateOptions,
  removeContainer,
  removeVolume,
  specScrubber,
  startContainer,
  stopContainer,
  throwIfAborted,
} from "@molecule/provisioner-core";
import type Dockerode from "dockerode";
import type {
  TenantBackend,
  TenantContext,
  TenantHandle,
  TenantInstance,
  TenantRedeployed,
  TenantRef,
  TenantSpec,
} from "./backend.ts";
import type { TenantDatabases } from "./databases.ts";

export const DOCKER_TENANT_BACKEND = "docker";
export const TENANT_KIND = "tenant";
/** Where the tenant's volume is mounted; MOLECULE_DATA_DIR. */
export const TENANT_DATA_DIR = "/data";
/** Seconds a stopped tenant gets to shut down (drain HTTP, stop its loops) before it is killed. */
const STOP_TIMEOUT_SECONDS = 30;
/** The port a tenant listens on (and is published on), so an adopted container keeps its URL. */
export const TENANT_PORT_LABEL = "molecule.tenant_port";

export interface DockerTenantHandle extends TenantHandle {
  backend: typeof DOCKER_TENANT_BACKEND;
  containerId: string;
  volume: string;
  port: number;
}

export interface DockerTenantBackendOptions {
  docker?: Dockerode;
  /** The tenant platform image, e.g. molecule/tenant-platform:latest (pulled, bounded, when absent). */
  image: string;
  /** The image of canary orgs' tenants (default `image`). */
  canaryImage?: string;
  /** "host", Docker's default "bridge", or the name of a user-defined network shared with the workspaces. */
  network: string;
  /** Every resource is labelled with it; `listManaged` returns only resources carrying it. */
  deployment: string;
  /**
   * MOLECULE_ENV: labelled on every container and volume (`molecule.environment`); `listManaged` leaves out another
   * environment's (resources made before the label existed carry none and stay listed), as the workspace backend does.
   */
  environment?: string;
  logger?: DockerLogger;
  /** Host ports to pick from (first free one wins). Default: an ephemeral port the kernel picks. */
  portRange?: { min: number; max: number };
  /** Picks the host port instead of `portRange`; `taken` are ports other tenant containers already use. */
  hostPortAllocator?: (taken: ReadonlySet<number>) => Promise<number>;
  /** The control plane's base URL as tenant containers reach it; replaces the spec's CP_PROVISION_URL. */
  cpUrlForTenant?: string;
  /** Memory limit of a tenant container (default 1024 MB). */
  memoryMb?: number;
  /** Bound on pulling a missing image (default 120 s). */
  pullTimeoutMs?: number;
  /**
   * A PostgreSQL database per org (TENANT_DATABASES=per-org): made before the container, handed to it as
   * DATABASE_URL, dropped with the tenant. Without it each tenant keeps an embedded database on its volume.
   */
  databases?: TenantDatabases;
}

/**
 * An org's slug, checked before any name is made from it: OrgSlug's shape only (lower-case letters, digits, dashes), so
 * a tenant name is never a path and never a workspace's name (`ws-<id>`: tenant names start with `tenant-`).
 */
function assertSlug(slug: string): string {
  if (!OrgSlug.safeParse(slug).success) {
    throw new ProvisionerError(
      "invalid_spec",
      "org slug must be 3-40 lower-case letters, digits and dashes",
      false,
    );
  }
  return slug;
}

export const tenantContainerName = (slug: string) => `tenant-${assertSlug(slug)}`;
export const tenantVolumeName = (slug: string) => `tenant-${assertSlug(slug)}-data`;

const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]"]);

/** Resolves when `port` can be bound on the host's loopback interface right now. */
function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen({ host: "127.0.0.1", port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

function ephemeralPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error("no port assigned"))));
    });
  });
}

function isDockerHandle(handle: TenantHandle | null): handle is DockerTenantHandle {
  return handle?.backend === DOCKER_TENANT_BACKEND && typeof handle.port === "number";
}

export function createDockerTenantBackend(opts: DockerTenantBackendOptions): TenantBackend {
  const docker = opts.docker ?? createDockerClient();
  const log = opts.logger ?? noopDockerLogger;
  const hostNetwork = opts.network === "host";
  const sharedNetwork = isUserDefinedNetwork(opts.network);
  const memory = (opts.memoryMb ?? 1024) * 1024 * 1024;
  const pullTimeoutMs = opts.pullTimeoutMs ?? 120_000;
  const deploymentFilter = `${LABELS.deployment}=${opts.deployment}`;
  const kindFilter = `${LABELS.kind}=${TENANT_KIND}`;

  // Port choice and container creation run one at a time in this process, so two orgs never pick the same port.
  let allocation: Promise<unknown> = Promise.resolve();
  function serialized<T>(fn: () => Promise<T>): Promise<T> {
    const next = allocation.then(fn, fn);
    allocation = next.catch(() => {});
    return next;
  }

  function labelsFor(spec: TenantSpec, port: number): Record<string, string> {
    return {
      [LABELS.managed]: "true",
      [LABELS.orgId]: spec.orgId,
      [LABELS.deployment]: opts.deployment,
      [LABELS.kind]: TENANT_KIND,
      ...(opts.environment ? { [LABELS.environment]: opts.environment } : {}),
      ...(port ? { [TENANT_PORT_LABEL]: String(port) } : {}),
    };
  }

  /** An org's tenant resources in this deployment. */
  const owner = (orgId: string): DockerOwner => ({
    labels: { [LABELS.orgId]: orgId, [LABELS.deployment]: opts.deployment, [LABELS.kind]: TENANT_KIND },
    noun: "org",
  });

  const imageFor = (spec: TenantSpec) => (spec.isCanary && opts.canaryImage) || opts.image;

  function validateSpec(spec: TenantSpec): void {
    assertSlug(spec.slug);
    if (spec.deployment !== opts.deployment) {
      throw new ProvisionerError(
        "invalid_spec",
        `spec deployment "${spec.deployment}" does not match this docker tenant backend's deployment "${opts.deployment}"`,
        false,
      );
    }
  }

  /** The tenant's port as its container records it. */
  function portOf(info: Dockerode.ContainerInspectInfo): number {
    const port = Number(info.Config.Labels?.[TENANT_PORT_LABEL]);
    if (!Number.isInteger(port) || port <= 0) {
      throw new ProvisionerError(
        "conflict",
        `container ${info.Name} carries no ${TENANT_PORT_LABEL} label`,
        false,
      );
    }
    return port;
  }

  /** Ports every tenant container on this engine uses, whatever its deployment: host ports are shared. */
  async function takenPorts(): Promise<Set<number>> {
    const containers = await dockerCall("list containers", () =>
      docker.listContainers({ all: true, filters: { label: [kindFilter] } }),
    );
    const taken = new Set<number>();
    for (const c of containers ?? []) {
      const port = Number(c.Labels?.[TENANT_PORT_LABEL]);
      if (Number.isInteger(port) && port > 0) taken.add(port);
    }
    return taken;
  }

  async function allocatePort(preferred: number | undefined): Promise<number> {
    const taken = await takenPorts();
    if (preferred && !taken.has(preferred) && (await portIsFree(preferred))) return preferred;
    if (opts.hostPortAllocator) return opts.hostPortAllocator(taken);
    if (opts.portRange) {
      for (let port = opts.portRange.min; port <= opts.portRange.max; port++) {
        if (!taken.has(port) && (await portIsFree(port))) return port;
      }
      throw new ProvisionerError(
        "capacity",
        `no free port for a tenant in ${opts.portRange.min}-${opts.portRange.max}`,
        true,
      );
    }
    for (let attempt = 0; attempt < 20; attempt++) {
      const port = await ephemeralPort();
      if (!taken.has(port)) return port;
    }
    throw new ProvisionerError("capacity", "no free loopback port for a tenant", true);
  }

  /** A loopback control-plane URL, as seen from a container on a bridge network. */
  function cpUrlFor(spec: TenantSpec): string | undefined {
    if (opts.cpUrlForTenant) return opts.cpUrlForTenant;
    const given = spec.env.CP_PROVISION_URL;
    if (!given || hostNetwork) return undefined;
    const url = new URL(given);
    if (!LOOPBACK_HOSTS.has(url.hostname)) return undefined;
    url.hostname = HOST_GATEWAY_NAME;
    return url.toString().replace(/\/$/, "");
  }

  /** How the tenant's workspaces reach it. */
  function platformUrl(spec: TenantSpec, port: number): string {
    if (hostNetwork) return `http://127.0.0.1:${port}`;
    if (sharedNetwork) return `http://${tenantContainerName(spec.slug)}:${port}`;
    return `http://${HOST_GATEWAY_NAME}:${port}`;
  }

  function envFor(spec: TenantSpec, port: number, databaseUrl: string | undefined): Record<string, string> {
    const cpUrl = cpUrlFor(spec);
    return {
      ...(hostNetwork ? { WORKSPACE_NETWORK: "host" } : {}),
      ...spec.env,
      ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
      MOLECULE_DATA_DIR: TENANT_DATA_DIR,
      PORT: String(port),
      HOST: hostNetwork ? "127.0.0.1" : "0.0.0.0",
      PLATFORM_URL: platformUrl(spec, port),
      ...(cpUrl ? { CP_PROVISION_URL: cpUrl } : {}),
    };
  }

  function createOptions(
    spec: TenantSpec,
    port: number,
    volume: string,
    image: string,
    databaseUrl: string | undefined,
  ): Dockerode.ContainerCreateOptions {
    const portKey = `${port}/tcp`;
    const name = tenantContainerName(spec.slug);
    const networking = containerNetworking(opts.network, name);
    const env = { ...envFor(spec, port, databaseUrl), MOLECULE_IMAGE: image };
    return {
      name,
      Image: image,
      Env: Object.entries(env).map(([key, value]) => `${key}=${value}`),
      Labels: labelsFor(spec, port),
      ...(hostNetwork ? {} : { ExposedPorts: { [portKey]: {} } }),
      ...(networking.networkingConfig ? { NetworkingConfig: networking.networkingConfig } : {}),
      HostConfig: {
        ...networking.hostConfig,
        ...(hostNetwork
          ? {}
          : { PortBindings: { [portKey]: [{ HostIp: "127.0.0.1", HostPort: String(port) }] } }),
        Mounts: [{ Type: "volume", Source: volume, Target: TENANT_DATA_DIR, ReadOnly: false }],
        Memory: memory,
        MemorySwap: memory,
        PidsLimit: 512,
        Privileged: false,
        CapDrop: ["ALL"],
        SecurityOpt: ["no-new-privileges"],
        IpcMode: "private",
        ReadonlyRootfs: true,
        Tmpfs: { "/tmp": "rw,nosuid,nodev,size=64m" },
        RestartPolicy: { Name: "unless-stopped" },
        // docker-init as PID 1: SIGTERM reaches the platform (graceful shutdown) and zombies are reaped.
        Init: true,
      },
    };
  }

  const ensureVolume = (spec: TenantSpec) =>
    ensureOwnedVolume(docker, tenantVolumeName(spec.slug), labelsFor(spec, 0), owner(spec.orgId));

  /** Creates the container on a newly chosen port, or adopts the one an earlier or concurrent call made. */
  function ensureContainer(
    spec: TenantSpec,
    volume: string,
    databaseUrl: string | undefined,
    preferredPort: number | undefined,
    image = imageFor(spec),
  ) {
    return createOrAdoptContainer(docker, tenantContainerName(spec.slug), owner(spec.orgId), () =>
      serialized(async () => {
        const port = await allocatePort(preferredPort);
        const options = createOptions(spec, port, volume, image, databaseUrl);
        const secretKeys = [...spec.secretKeys, "DATABASE_URL"];
        log.info(
          { orgId: spec.orgId, slug: spec.slug, options: redactCreateOptions(options, secretKeys) },
          "docker: creating tenant container",
        );
        return createContainerUnlessTaken(docker, options);
      }),
    );
  }

  /** The org's database (made unless it exists), when tenants get one: its DATABASE_URL. */
  async function ensureDatabase(
    spec: TenantSpec,
    step: (name: string, detail?: string) => void,
  ): Promise<string | undefined> {
    if (!opts.databases) return undefined;
    const url = await opts.databases.ensure(spec);
    step("database_ready", opts.databases.nameFor(spec));
    log.info(
      { orgId: spec.orgId, slug: spec.slug, database: opts.databases.nameFor(spec) },
      "docker: tenant database ready",
    );
    return url;
  }

  /** Every container/volume of the org's tenant in this deployment: the named ones plus any labelled strays. */
  const findResources = (ref: TenantRef) =>
    findOwnedResources(docker, owner(ref.orgId), {
      container: tenantContainerName(ref.slug),
      volume: tenantVolumeName(ref.slug),
    });

  async function provision(
    spec: TenantSpec,
    handle: TenantHandle | null,
    ctx: TenantContext | undefined,
  ): Promise<TenantInstance> {
    validateSpec(spec);
    const step = (name: string, detail?: string) => ctx?.step?.(name, detail);
    const name = tenantContainerName(spec.slug);
    const signal = ctx?.signal;

    throwIfAborted(signal, "tenant provision");
    let existing = await inspectOwnedContainer(docker, name, owner(spec.orgId));
    if (existing) {
      step("image_ready", `container exists (${existing.Config.Image})`);
    } else {
      const image = imageFor(spec);
      const outcome = await ensureImage(docker, image, { timeoutMs: pullTimeoutMs, signal, logger: log });
      step("image_ready", `${image} ${outcome}`);
    }
    throwIfAborted(signal, "tenant provision");
    if (sharedNetwork) await ensureNetwork(docker, opts.network);
    const volume = await auditedCreate(
      ctx?.audit,
      "volume",
      tenantContainerName(spec.slug),
      () => ensureVolume(spec),
      (made) => made,
    );
    step("volume_ready", volume);
    throwIfAborted(signal, "tenant provision");
    const databaseUrl = await ensureDatabase(spec, step);
    throwIfAborted(signal, "tenant provision");
    if (!existing) {
      const preferred = isDockerHandle(handle) ? handle.port : undefined;
      const { info, created } = await auditedCreate(
        ctx?.audit,
        "container",
        name,
        () => ensureContainer(spec, volume, databaseUrl, preferred),
        (made) => made.info.Id,
      );
      existing = info;
      step("container_created", created ? info.Id : `adopted ${info.Id}`);
    } else {
      step("container_created", `adopted ${existing.Id}`);
    }
    const port = portOf(existing);
    await startContainer(docker, existing.Id, signal);
    step("container_started", existing.Id);
    log.info(
      { orgId: spec.orgId, slug: spec.slug, containerId: existing.Id, port },
      "docker: tenant started",
    );
    const tenantHandle: DockerTenantHandle = {
      backend: DOCKER_TENANT_BACKEND,
      containerId: existing.Id,
      volume,
      port,
    };
    return { handle: tenantHandle, url: `http://127.0.0.1:${port}` };
  }

  /** The org's tenant container, or a non-retryable `not_found` naming it. */
  async function ownedTenant(ref: TenantRef): Promise<Dockerode.ContainerInspectInfo> {
    const name = tenantContainerName(ref.slug);
    const info = await inspectOwnedContainer(docker, name, owner(ref.orgId));
    if (!info) throw new ProvisionerError("not_found", `the org has no tenant container (${name})`, false);
    return info;
  }

  /**
   * Replaces the container with one of `image` on the same volume and port: the image is made available first (a
   * failed pull leaves the running tenant alone), then the old container goes and the new one starts. A retry after
   * a crash in between finds no container and creates it.
   */
  async function redeploy(
    spec: TenantSpec,
    handle: TenantHandle | null,
    image: string,
    ctx: TenantContext | undefined,
  ): Promise<TenantRedeployed> {
    validateSpec(spec);
    const step = (name: string, detail?: string) => ctx?.step?.(name, detail);
    const name = tenantContainerName(spec.slug);
    const signal = ctx?.signal;
    const outcome = await ensureImage(docker, image, { timeoutMs: pullTimeoutMs, signal, logger: log });
    step("image_ready", `${image} ${outcome}`);
    throwIfAborted(signal, "tenant redeploy");
    if (sharedNetwork) await ensureNetwork(docker, opts.network);
    const volume = await auditedCreate(
      ctx?.audit,
      "volume",
      name,
      () => ensureVolume(spec),
      (made) => made,
    );
    throwIfAborted(signal, "tenant redeploy");
    const databaseUrl = await ensureDatabase(spec, step);
    throwIfAborted(signal, "tenant redeploy");
    const existing = await inspectOwnedContainer(docker, name, owner(spec.orgId));
    const port = existing ? portOf(existing) : isDockerHandle(handle) ? handle.port : undefined;
    if (existing) {
      await removeContainer(docker, existing.Id, signal);
      step("container_removed", `${existing.Id} (${existing.Config.Image})`);
    }
    const { info } = await auditedCreate(
      ctx?.audit,
      "container",
      name,
      () => ensureContainer(spec, volume, databaseUrl, port, image),
      (made) => made.info.Id,
    );
    await startContainer(docker, info.Id, signal);
    step("container_started", `${info.Id} on ${volume}`);
    log.info(
      { orgId: spec.orgId, slug: spec.slug, containerId: info.Id, image },
      "docker: tenant redeployed",
    );
    const tenantHandle: DockerTenantHandle = {
      backend: DOCKER_TENANT_BACKEND,
      containerId: info.Id,
      volume,
      port: portOf(info),
    };
    return {
      output: `container ${info.Id} runs ${image} on volume ${volume}`,
      instance: { handle: tenantHandle, url: `http://127.0.0.1:${portOf(info)}` },
    };
  }

  return {
    name: DOCKER_TENANT_BACKEND,

    imageFor: (isCanary) => (isCanary && opts.canaryImage) || opts.image,

    async stop(ref, ctx) {
      throwIfAborted(ctx?.signal, "tenant stop");
      const info = await ownedTenant(ref);
      await stopContainer(docker, info.Id, STOP_TIMEOUT_SECONDS, ctx?.signal);
      ctx?.step?.("container_stopped", info.Id);
    },

    async start(ref, ctx) {
      throwIfAborted(ctx?.signal, "tenant start");
      const info = await ownedTenant(ref);
      await startContainer(docker, info.Id, ctx?.signal);
      ctx?.step?.("container_started", info.Id);
    },

    redeploy(spec, handle, image, ctx) {
      const scrub = specScrubber(spec, opts.databases?.passwordFor(spec));
      return scrub.run(() => redeploy(spec, handle, image, scrub.context(ctx)));
    },

    // Nothing the spec holds (the tenant's tokens and keys) leaves in an error or a step detail.
    provision(spec, handle, ctx?: TenantContext): Promise<TenantInstance> {
      const scrub = specScrubber(spec, opts.databases?.passwordFor(spec));
      return scrub.run(() => provision(spec, handle, scrub.context(ctx)));
    },

    async destroy(ref, ctx) {
      assertSlug(ref.slug);
      throwIfAborted(ctx?.signal, "tenant destroy");
      const { containerIds, volumeNames } = await findResources(ref);
      for (const id of containerIds) await removeContainer(docker, id, ctx?.signal);
      for (const volume of volumeNames) await removeVolume(docker, volume, ctx?.signal);
      if (containerIds.length + volumeNames.length > 0) {
        log.info({ orgId: ref.orgId, slug: ref.slug, containerIds, volumeNames }, "docker: destroyed tenant");
      }
      if (opts.databases) {
        throwIfAborted(ctx?.signal, "tenant destroy");
        await opts.databases.drop(ref);
        ctx?.step?.("database_dropped", opts.databases.nameFor(ref));
      }
    },

    // The tenant's resources are found by the org's labels already; the workspaces' are the workspace backend's.
    async sweepOrg(ref, ctx) {
      await this.destroy(ref, ctx);
    },

    async status(ref): Promise<RuntimeStatus> {
      assertSlug(ref.slug);
      return ownedContainerStatus(docker, tenantContainerName(ref.slug), owner(ref.orgId));
    },

    listManaged: (): Promise<ManagedResource[]> =>
      listManagedResources(
        docker,
        [`${LABELS.managed}=true`, deploymentFilter, kindFilter],
        opts.environment,
      ),
  };
}

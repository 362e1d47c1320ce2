import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import { type BackoffOptions, backoffDelay, isId } from "@molecule/contracts";
import type { Dispatcher } from "undici";
import { DEFAULT_AGENT_PORT, fixedAgentPort } from "../agent-address.ts";
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
import { auditedCreate } from "../provisioner.ts";
import { pauseUnlessAborted } from "../retry.ts";
import { specScrubber } from "../scrub.ts";
import { TIER_LIMITS } from "../tiers.ts";
import {
  FlyApi,
  type FlyCall,
  type FlyLogger,
  type FlyReply,
  type FlyRetryOptions,
  flyError,
  flyPath,
} from "./api.ts";

export interface FlyProvisionerOptions {
  /** FLY_API_TOKEN */
  apiToken: string;
  /** FLY_WORKSPACE_APP: the Fly app that holds the workspace machines and volumes. */
  app: string;
  /**
   * MOLECULE_ENV: put in each machine's metadata; `listManaged` leaves out machines (and their volumes) with another
   * environment's (machines made before it carry none and stay listed).
   */
  environment?: string;
  /** FLY_REGION (default ord) */
  region: string;
  /** FLY_FALLBACK_REGIONS: tried in order when a region answers insufficient_capacity. */
  fallbackRegions?: readonly string[];
  /** FLY_API_BASE_URL (default https://api.machines.dev); point it at the emulator in tests. */
  baseUrl?: string;
  /** Names this installation; machines carry it in metadata and listManaged filters on it. */
  deployment: string;
  /** Image is `${imagePrefix}${runtime}:${imageTag}`. */
  imagePrefix: string;
  imageTag: string;
  /** FLY_WAIT_DEADLINE_SECONDS × 1000: how long to wait for a machine to reach a state (default 5 min). */
  waitDeadlineMs?: number;
  retry?: Partial<FlyRetryOptions>;
  /** Per request, excluding the /wait long poll (default 30 s). */
  requestTimeoutMs?: number;
  leaseTtlSeconds?: number;
  /** How long to keep trying when another holder has the machine's lease (409) (default 30 s). */
  leaseWaitMs?: number;
  dispatcher?: Dispatcher;
  clock?: { now(): number };
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
  logger?: FlyLogger;
}

export const DEFAULT_FLY_RETRY: FlyRetryOptions = {
  maxAttempts: 6,
  baseDelayMs: 250,
  maxDelayMs: 10_000,
  maxElapsedMs: 60_000,
};

/** Waits while another holder has a machine's lease: 50 ms doubling to 2 s, no jitter (the deadline bounds it). */
const LEASE_WAIT: BackoffOptions = { baseMs: 50, maxMs: 2_000, jitter: "none" };
/** Waits while a volume is still attached to a machine being destroyed: 20 ms doubling to 1 s. */
const VOLUME_DETACH_WAIT: BackoffOptions = { baseMs: 20, maxMs: 1_000, jitter: "none" };

/** Where the runtime's init script writes MOLECULE_CONFIG_B64 once the volume is mounted. */
export const FLY_CONFIG_ENV = "MOLECULE_CONFIG_B64";
export const FLY_CONFIG_PATH = "/workspace/.molecule/config.json";
export const FLY_MOUNT_PATH = "/workspace";
export const FLY_SUSPEND_MAX_MEMORY_MB = 2048;

interface FlyMachine {
  id: string;
  name?: string;
  state?: string;
  region?: string;
  instance_id?: string;
  /** The whole config as Fly holds it: an update sends it back with the agent's address added. */
  config?: {
    guest?: { memory_mb?: number };
    env?: Record<string, string>;
    metadata?: Record<string, string>;
    mounts?: { volume?: string }[];
    [key: string]: unknown;
  };
}

interface FlyVolume {
  id: string;
  name?: string;
  state?: string;
  region?: string;
  attached_machine_id?: string | null;
}

export interface FlyHandle extends Handle {
  backend: "flyio";
  app: string;
  region: string;
  machineId?: string;
  machineName: string;
  volumeId?: string;
  volumeName: string;
  /** `http://<machine id>.vm.<app>.internal:<port>`: the agent's address on the organisation's private network. */
  agentUrl?: string;
}

/**
 * The address at which the platform reaches a machine's agent: Fly's private-network (6PN) name of that one machine,
 * which resolves only inside the Fly organisation (the tenant platform must run there too).
 */
export function flyAgentUrl(app: string, machineId: string, port: number): string {
  if (!/^[a-z0-9]+$/.test(machineId) || !/^[a-z0-9][a-z0-9-]*$/.test(app)) {
    throw new ProvisionerError("backend_error", "flyio: machine id or app name is not a DNS label", false);
  }
  return `http://${machineId}.vm.${app}.internal:${port}`;
}

/**
 * The agent's port on Fly: the spec's AGENT_PORT, else the default. An agent told to pick any free port
 * (`AGENT_PORT=0`, as for workspaces sharing a host's network) listens on the default instead, since the platform
 * must know the address.
 */
function flyAgentPort(env: Readonly<Record<string, string>> | undefined): number {
  return fixedAgentPort(env ?? {}) ?? DEFAULT_AGENT_PORT;
}

const GONE_VOLUME_STATES = new Set(["destroyed", "destroying", "pending_destroy", "scheduling_destroy"]);
/**
 * Fly volume names allow at most 30 lower-case letters, digits and underscores: a workspace id (`ws_` + 26, checked
 * here like every name a backend makes) is used as it is.
 */
export function flyVolumeName(workspaceId: string): string {
  return assertWorkspaceId(workspaceId);
}

function regionOf(spec: WorkspaceSpec): string | undefined {
  const region = spec.metadata.region;
  return typeof region === "string" && region !== "" ? region : undefined;
}

function unique(values: (string | undefined)[]): string[] {
  return [...new Set(values.filter((v): v is string => !!v))];
}

function handleString(handle: Handle | null, key: string): string | undefined {
  const value = handle?.[key];
  return typeof value === "string" && value !== "" ? value : undefined;
}

export class FlyProvisioner implements Provisioner {
  readonly name = "flyio";
  private readonly api: FlyApi;
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly locks = new Map<string, Promise<unknown>>();
  /** The signal of the lifecycle call under way (see `locked`), so that helpers need not pass it along. */
  private readonly callSignal = new AsyncLocalStorage<AbortSignal | undefined>();
  /** `/apps/<app>` and the rest of a Machines API path, every interpolated id encoded as one segment (flyPath). */
  private readonly path: (parts: TemplateStringsArray, ...segments: string[]) => string;

  constructor(private readonly options: FlyProvisionerOptions) {
    if (!options.apiToken)
      throw new ProvisionerError("invalid_spec", "flyio: apiToken (FLY_API_TOKEN) is required", false);
    if (!options.app)
      throw new ProvisionerError("invalid_spec", "flyio: app (FLY_WORKSPACE_APP) is required", false);
    this.now = options.clock ? () => (options.clock as { now(): number }).now() : Date.now;
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    const appPath = flyPath`/apps/${options.app}`;
    this.path = (parts, ...segments) => appPath + flyPath(parts, ...segments);
    this.api = new FlyApi({
      apiToken: options.apiToken,
      baseUrl: options.baseUrl ?? "https://api.machines.dev",
      retry: { ...DEFAULT_FLY_RETRY, ...options.retry },
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      dispatcher: options.dispatcher,
      now: this.now,
      sleep: this.sleep,
      random: options.random ?? Math.random,
      logger: options.logger,
    });
  }

  capabilities(): Capabilities {
    return { suspend: true, suspendMaxMemoryMb: FLY_SUSPEND_MAX_MEMORY_MB };
  }

  // Nothing the spec holds (nor the API token) leaves in an error or a step detail, whatever Fly answered. Every entry
  // point checks the workspace id before anything is named or requested after it.
  provision(spec: WorkspaceSpec, handle: Handle | null, ctx: ProvisionContext = {}): Promise<Handle> {
    const scrub = specScrubber(spec, this.options.apiToken);
    return scrub.run(async () => {
      assertWorkspaceId(spec.workspaceId);
      return this.locked(spec.workspaceId, ctx.signal, () =>
        this.doProvision(spec, handle, scrub.context(ctx) ?? {}),
      );
    });
  }

  start(spec: WorkspaceSpec, handle: Handle | null, ctx: ProvisionContext = {}): Promise<Handle> {
    const scrub = specScrubber(spec, this.options.apiToken);
    return scrub.run(() => this.doStart(spec, handle, scrub.context(ctx) ?? {}));
  }

  private async doStart(spec: WorkspaceSpec, handle: Handle | null, ctx: ProvisionContext): Promise<Handle> {
    assertWorkspaceId(spec.workspaceId);
    return this.locked(spec.workspaceId, ctx.signal, async () => {
      // A machine's config is replaced whole on Fly; rebuilding it on the kept volume is the same end state.
      if (ctx.recreate) await this.destroyMachines(spec.workspaceId, handle, ctx);
      const machine = ctx.recreate ? null : await this.findMachine(spec.workspaceId, handle);
      if (!machine) return this.doProvision(spec, handle, ctx);
      await this.bringUp(machine, ctx);
      return this.handleFor(
        spec.workspaceId,
        machine,
        await this.findVolume(spec.workspaceId, handle, machine),
      );
    });
  }

  async stop(ref: WorkspaceRef, ctx: ProvisionContext = {}): Promise<void> {
    assertWorkspaceId(ref.workspaceId);
    return this.locked(ref.workspaceId, ctx.signal, async () => {
      const machine = await this.findMachine(ref.workspaceId, ref.handle);
      if (!machine) {
        ctx.step?.("machine_missing", "nothing to stop");
        return;
      }
      await this.stopMachine(machine, ctx);
    });
  }

  async suspend(ref: WorkspaceRef, ctx: ProvisionContext = {}): Promise<SuspendResult> {
    assertWorkspaceId(ref.workspaceId);
    return this.locked(ref.workspaceId, ctx.signal, async () => {
      const machine = await this.findMachine(ref.workspaceId, ref.handle);
      if (!machine) {
        throw new ProvisionerError("not_found", `no Fly machine for workspace ${ref.workspaceId}`, false);
      }
      const memory = machine.config?.guest?.memory_mb ?? 0;
      if (memory > FLY_SUSPEND_MAX_MEMORY_MB) {
        await this.stopMachine(machine, ctx);
        return {
          suspended: false,
          reason: `memory ${memory} MB is above Fly's ${FLY_SUSPEND_MAX_MEMORY_MB} MB suspend limit; stopped instead`,
        };
      }
      if (machine.state === "suspended") return { suspended: true };
      if (machine.state === "stopped") return { suspended: false, reason: "the machine is already stopped" };
      if (machine.state !== "started") await this.waitFor(machine.id, "started");
      try {
        await this.withLease(machine.id, "suspend", async (nonce) => {
          const reply = await this.call({
            op: "Machines_suspend",
            method: "POST",
            path: this.path`/machines/${machine.id}/suspend`,
            nonce,
            accept: [412],
          });
          if (reply.status === 412) await this.expectState(machine.id, ["suspending", "suspended"], reply);
        });
      } catch (error) {
        // Fly refuses some machines (swap, large memory): fall back to a stop and say why.
        if (error instanceof ProvisionerError && error.details.httpStatus === 400) {
          await this.stopMachine(machine, ctx);
          return { suspended: false, reason: `Fly refused to suspend: ${error.message}; stopped instead` };
        }
        throw error;
      }
      await this.waitFor(machine.id, "suspended");
      ctx.step?.("machine_suspended", `machine_id=${machine.id}`);
      return { suspended: true };
    });
  }

  async destroy(ref: WorkspaceRef, ctx: ProvisionContext = {}): Promise<void> {
    assertWorkspaceId(ref.workspaceId);
    return this.locked(ref.workspaceId, ctx.signal, async () => {
      await this.destroyMachines(ref.workspaceId, ref.handle, ctx);
      for (const volume of await this.findVolumes(ref.workspaceId, ref.handle)) {
        await this.deleteVolume(volume);
        ctx.step?.("volume_destroyed", `volume_id=${volume.id}`);
      }
    });
  }

  /** Destroys the workspace's machines (force), leaving its volume. */
  private async destroyMachines(
    workspaceId: string,
    handle: Handle | null,
    ctx: ProvisionContext,
  ): Promise<void> {
    for (const machine of await this.findMachines(workspaceId, handle)) {
      const gone = await this.withLease(machine.id, "destroy", async (nonce) => {
        const reply = await this.call({
          op: "Machines_delete",
          method: "DELETE",
          path: this.path`/machines/${machine.id}`,
          query: { force: "true" },
          nonce,
          accept: [404],
        });
        return reply.status === 404;
      });
      if (gone !== "missing" && !gone) await this.waitFor(machine.id, "destroyed");
      ctx.step?.("machine_destroyed", `machine_id=${machine.id}`);
    }
  }

  async status(ref: WorkspaceRef): Promise<RuntimeStatus> {
    assertWorkspaceId(ref.workspaceId);
    let machine: FlyMachine | null;
    try {
      machine = await this.findMachine(ref.workspaceId, ref.handle);
    } catch (error) {
      return { state: "unknown", detail: safeMessage(error) };
    }
    if (!machine) return { state: "missing" };
    const state = machine.state ?? "unknown";
    const detail = `fly state ${state}`;
    switch (state) {
      case "started":
        return { state: "running", detail };
      case "created":
      case "starting":
      case "restarting":
      case "updating":
      case "replacing":
        return { state: "starting", detail };
      case "stopped":
      case "stopping":
      case "failed":
        return { state: "stopped", detail };
      case "suspended":
      case "suspending":
        return { state: "suspended", detail };
      case "destroying":
      case "destroyed":
        return { state: "missing", detail };
      default:
        return { state: "unknown", detail };
    }
  }

  async listManaged(): Promise<ManagedResource[]> {
    const machines = (
      await this.call<FlyMachine[]>({
        op: "Machines_list",
        method: "GET",
        path: this.path`/machines`,
        query: { [`metadata.${LABELS.deployment}`]: this.options.deployment },
      })
    ).body;
    const environment = this.options.environment;
    const foreign = new Set(
      machines
        .filter((m) => {
          const theirs = m.config?.metadata?.[LABELS.environment];
          return environment !== undefined && theirs !== undefined && theirs !== environment;
        })
        .map((m) => m.id),
    );
    const byId = new Map(machines.map((m) => [m.id, m]));
    const out: ManagedResource[] = machines
      .filter((m) => m.state !== "destroyed" && !foreign.has(m.id))
      .map((m) => ({
        kind: "fly_machine",
        id: m.id,
        workspaceId: m.config?.metadata?.[LABELS.workspaceId] ?? null,
        orgId: m.config?.metadata?.[LABELS.orgId] ?? null,
        state: m.state,
        pool: m.config?.metadata?.[LABELS.pool] ?? null,
      }));
    for (const volume of await this.listVolumes()) {
      const owner = volume.attached_machine_id ? byId.get(volume.attached_machine_id) : undefined;
      // Volumes carry no metadata: ours are attached to our machines, or unattached with a workspace-id name.
      if (volume.attached_machine_id && (!owner || foreign.has(volume.attached_machine_id))) continue;
      const fromName = volume.name && isId("ws", volume.name) ? volume.name : null;
      if (!owner && !fromName) continue;
      out.push({
        kind: "fly_volume",
        id: volume.id,
        workspaceId: owner?.config?.metadata?.[LABELS.workspaceId] ?? fromName,
        orgId: owner?.config?.metadata?.[LABELS.orgId] ?? null,
        state: volume.state,
        pool: owner?.config?.metadata?.[LABELS.pool] ?? null,
      });
    }
    return out;
  }

  // ---- provisioning --------------------------------------------------------------------------------------------

  private async doProvision(
    spec: WorkspaceSpec,
    handle: Handle | null,
    ctx: ProvisionContext,
  ): Promise<Handle> {
    const existing = await this.findMachine(spec.workspaceId, handle);
    if (existing) {
      ctx.step?.("machine_found", `machine_id=${existing.id} region=${existing.region ?? ""}`);
      await this.bringUp(existing, ctx);
      const mounted = existing.config?.mounts?.[0]?.volume;
      const volumes = await this.findVolumes(spec.workspaceId, handle);
      for (const twin of volumes) {
        // A volume create whose answer was lost may have landed later (Fly volume names are not unique).
        if (mounted && twin.id !== mounted && !twin.attached_machine_id) {
          await this.deleteVolume(twin);
          ctx.step?.("volume_twin_removed", `volume_id=${twin.id}`);
        }
      }
      return this.handleFor(spec.workspaceId, existing, volumes.find((v) => v.id === mounted) ?? null);
    }
    let volume = await this.findVolume(spec.workspaceId, handle);
    const preferred = regionOf(spec) ?? this.options.region;
    const regions = unique([volume?.region, preferred, ...(this.options.fallbackRegions ?? [])]);
    let machine: FlyMachine | null = null;
    let uncertainVolumeCreate = false;
    for (const [index, region] of regions.entries()) {
      const last = index === regions.length - 1;
      try {
        if (volume && volume.region !== region) {
          await this.deleteVolume(volume);
          ctx.step?.("volume_released", `volume_id=${volume.id} region=${volume.region ?? ""}`);
          volume = null;
        }
        if (!volume) {
          const created = await auditedCreate(
            ctx.audit,
            "fly_volume",
            flyVolumeName(spec.workspaceId),
            () => this.createVolume(spec, region),
            (made) => made.volume.id,
          );
          volume = created.volume;
          uncertainVolumeCreate ||= created.uncertain;
          ctx.step?.("volume_created", `volume_id=${volume.id} region=${volume.region ?? region}`);
        }
        const attached = volume;
        machine = await auditedCreate(
          ctx.audit,
          "fly_machine",
          resourceName(spec.workspaceId),
          () => this.createMachine(spec, region, attached),
          (made) => made.id,
        );
        ctx.step?.("machine_created", `machine_id=${machine.id} region=${machine.region ?? region}`);
        break;
      } catch (error) {
        if (!(error instanceof ProvisionerError && error.code === "capacity") || last) throw error;
        ctx.step?.("region_full", `region=${region}: ${error.message}`);
        this.options.logger?.warn(
          { region, workspaceId: spec.workspaceId },
          "fly region at capacity; next region",
        );
      }
    }
    if (!machine || !volume) throw new ProvisionerError("capacity", "no region to try", true);
    if (uncertainVolumeCreate) {
      // Fly volume names are not unique: a create whose answer was lost may still land. Remove such twins.
      for (const twin of await this.findVolumes(spec.workspaceId, null)) {
        if (twin.id !== volume.id && !twin.attached_machine_id) await this.deleteVolume(twin);
      }
    }
    await this.bringUp(machine, ctx);
    return this.handleFor(spec.workspaceId, machine, volume);
  }

  private machineConfig(spec: WorkspaceSpec, volume: FlyVolume): Record<string, unknown> {
    const limits = TIER_LIMITS[spec.tier];
    const config = {
      workspaceId: spec.workspaceId,
      orgId: spec.orgId,
      deployment: spec.deployment,
      runtime: spec.runtime,
      tier: spec.tier,
      metadata: spec.metadata,
    };
    return {
      image: `${this.options.imagePrefix}${spec.runtime}:${this.options.imageTag}`,
      guest: { cpu_kind: limits.cpuKind, cpus: limits.cpus, memory_mb: limits.memoryMb },
      env: {
        ...spec.env,
        AGENT_PORT: String(flyAgentPort(spec.env)),
        [FLY_CONFIG_ENV]: Buffer.from(JSON.stringify(config)).toString("base64"),
        MOLECULE_CONFIG_PATH: FLY_CONFIG_PATH,
      },
      mounts: [{ volume: volume.id, path: FLY_MOUNT_PATH }],
      metadata: {
        [LABELS.managed]: "true",
        [LABELS.workspaceId]: spec.workspaceId,
        [LABELS.orgId]: spec.orgId,
        [LABELS.deployment]: spec.deployment,
        ...(this.options.environment ? { [LABELS.environment]: this.options.environment } : {}),
        ...(spec.pool ? { [LABELS.pool]: spec.pool } : {}),
      },
      restart: { policy: "on-failure", max_retries: 3 },
      auto_destroy: false,
    };
  }

  /** Creates the volume; after a failed or dropped attempt, looks for it by name before trying again. */
  private async createVolume(
    spec: WorkspaceSpec,
    region: string,
  ): Promise<{ volume: FlyVolume; uncertain: boolean }> {
    const backoff = this.api.backoff();
    for (let attempt = 1; ; attempt++) {
      const uncertain = attempt > 1;
      if (attempt > 1) {
        const found = await this.findVolume(spec.workspaceId, null);
        if (found) return { volume: found, uncertain };
      }
      try {
        const reply = await this.call<FlyVolume>({
          op: "Volumes_create",
          method: "POST",
          path: this.path`/volumes`,
          body: {
            name: flyVolumeName(spec.workspaceId),
            region,
            size_gb: TIER_LIMITS[spec.tier].volumeGb,
            encrypted: true,
          },
          retry: false,
        });
        return { volume: reply.body, uncertain };
      } catch (error) {
        await this.pauseOrThrow(backoff, error);
      }
    }
  }

  /** Creates the machine; a retry or a 422 (name taken) first looks it up by its workspace metadata. */
  private async createMachine(spec: WorkspaceSpec, region: string, volume: FlyVolume): Promise<FlyMachine> {
    const backoff = this.api.backoff();
    for (let attempt = 1; ; attempt++) {
      if (attempt > 1) {
        const found = await this.findMachine(spec.workspaceId, null);
        if (found) return found;
      }
      try {
        const reply = await this.call<FlyMachine>({
          op: "Machines_create",
          method: "POST",
          path: this.path`/machines`,
          body: {
            name: resourceName(spec.workspaceId),
            region,
            config: this.machineConfig(spec, volume),
            // Launched by the update that gives it its address, which names the id this answer carries.
            skip_launch: true,
          },
          retry: false,
        });
        return reply.body;
      } catch (error) {
        if (error instanceof ProvisionerError && error.details.httpStatus === 422) {
          const found = await this.findMachine(spec.workspaceId, null);
          if (found) return found;
        }
        await this.pauseOrThrow(backoff, error);
      }
    }
  }

  /** A Machines API request under the current lifecycle call's signal. */
  private call<T = unknown>(call: FlyCall): Promise<FlyReply<T>> {
    const signal = this.callSignal.getStore();
    return this.api.call<T>(signal ? { ...call, signal } : call);
  }

  /** Waits `ms`, or ends with a retryable `timeout` as soon as the current lifecycle call's signal fires. */
  private pause(ms: number): Promise<void> {
    return pauseUnlessAborted(this.sleep, ms, this.callSignal.getStore(), "Fly");
  }

  private async pauseOrThrow(backoff: ReturnType<FlyApi["backoff"]>, error: unknown): Promise<void> {
    if (!(error instanceof ProvisionerError) || error.details.transient !== true) throw error;
    const retryAfter = error.details.retryAfterMs;
    const delay = backoff.next(typeof retryAfter === "number" ? retryAfter : undefined);
    if (delay === null) throw error;
    await this.pause(delay);
  }

  // ---- lifecycle helpers ---------------------------------------------------------------------------------------

  private async bringUp(machine: FlyMachine, ctx: ProvisionContext): Promise<void> {
    if (machine.state === "stopping" || machine.state === "suspending") {
      await this.waitFor(machine.id, machine.state === "stopping" ? "stopped" : "suspended");
      await this.bringUp({ ...machine, state: machine.state === "stopping" ? "stopped" : "suspended" }, ctx);
      return;
    }
    if (!this.isAddressed(machine)) {
      // New machines are created unlaunched: their address names the id Fly gave them. The update launches them.
      await this.assignAddress(machine, ctx);
    } else if (machine.state === "stopped" || machine.state === "suspended" || machine.state === "created") {
      await this.withLease(machine.id, "start", async (nonce) => {
        const reply = await this.call({
          op: "Machines_start",
          method: "POST",
          path: this.path`/machines/${machine.id}/start`,
          nonce,
          accept: [412],
        });
        if (reply.status === 412) await this.expectState(machine.id, ["starting", "started"], reply);
      });
    }
    await this.waitFor(machine.id, "started");
    ctx.step?.("machine_started", `machine_id=${machine.id}`);
  }

  /** The agent's address for this machine (its id, the app, the port its config gives the agent). */
  private agentUrl(machine: FlyMachine): string {
    return flyAgentUrl(this.options.app, machine.id, flyAgentPort(machine.config?.env));
  }

  /** True when the machine's config already tells its agent its address. */
  private isAddressed(machine: FlyMachine): boolean {
    return machine.config?.env?.AGENT_PUBLIC_URL === this.agentUrl(machine);
  }

  /**
   * Updates the machine's config (Fly takes it whole) with AGENT_PUBLIC_URL and AGENT_PORT added. An update without
   * `skip_launch` launches the new version: a created or stopped machine boots, a started one restarts. No lease is
   * taken for this one call; a 409 (someone else holds the lease) waits for it and updates under ours. A 412 (the
   * machine is in a transition, e.g. our own update whose answer was lost) is fine once the machine has the address.
   */
  private async assignAddress(machine: FlyMachine, ctx: ProvisionContext): Promise<void> {
    const agentUrl = this.agentUrl(machine);
    const env = machine.config?.env ?? {};
    const config = {
      ...machine.config,
      env: { ...env, AGENT_PORT: String(flyAgentPort(env)), AGENT_PUBLIC_URL: agentUrl },
    };
    const update = (nonce?: string) =>
      this.call({
        op: "Machines_update",
        method: "POST",
        path: this.path`/machines/${machine.id}`,
        body: { config },
        accept: [409, 412],
        ...(nonce ? { nonce } : {}),
      });
    let reply = await update();
    if (reply.status === 409) {
      const leased = await this.withLease(machine.id, "update", (nonce) => update(nonce));
      if (leased === "missing") {
        throw new ProvisionerError(
          "not_found",
          `Fly machine ${machine.id} disappeared before its update`,
          false,
        );
      }
      reply = leased;
    }
    if (reply.status === 412 || reply.status === 409) {
      const now = await this.getMachine(machine.id);
      if (!now || !this.isAddressed(now)) {
        throw new ProvisionerError(
          "conflict",
          `Fly machine ${machine.id} is ${now?.state ?? "gone"} and could not be given its address (HTTP ${reply.status})`,
          true,
          { machineId: machine.id, state: now?.state, flyRequestId: reply.requestId },
        );
      }
    }
    ctx.step?.("agent_address_assigned", `machine_id=${machine.id} agent_url=${agentUrl}`);
  }

  private async stopMachine(machine: FlyMachine, ctx: ProvisionContext): Promise<void> {
    if (machine.state === "stopped") return;
    if (machine.state !== "stopping") {
      await this.withLease(machine.id, "stop", async (nonce) => {
        const reply = await this.call({
          op: "Machines_stop",
          method: "POST",
          path: this.path`/machines/${machine.id}/stop`,
          body: {},
          nonce,
          accept: [412],
        });
        if (reply.status === 412) await this.expectState(machine.id, ["stopping", "stopped"], reply);
      });
    }
    await this.waitFor(machine.id, "stopped");
    ctx.step?.("machine_stopped", `machine_id=${machine.id}`);
  }

  /** After a 412 (wrong state, often our own retried request already applied): accept it if the state is right. */
  private async expectState(machineId: string, states: string[], reply: { status: number }): Promise<void> {
    const machine = await this.getMachine(machineId);
    if (machine?.state && states.includes(machine.state)) return;
    throw new ProvisionerError(
      "conflict",
      `Fly machine ${machineId} is ${machine?.state ?? "gone"}, not ${states.join(" or ")} (HTTP ${reply.status})`,
      false,
      { machineId, state: machine?.state },
    );
  }

  /**
   * Runs `fn` holding the machine's lease. A 409 means someone else holds it: wait within `leaseWaitMs`.
   * If our own acquire was applied but its answer was lost, the retry sees 409; the lease's description
   * (unique per attempt) identifies it as ours and its nonce is adopted. Returns "missing" when the machine is gone.
   */
  private async withLease<T>(machineId: string, purpose: string, fn: (nonce: string) => Promise<T>) {
    const path = this.path`/machines/${machineId}/lease`;
    const description = `molecule ${purpose} ${randomUUID()}`;
    const deadline = this.now() + (this.options.leaseWaitMs ?? 30_000);
    let nonce: string | undefined;
    for (let tries = 1; !nonce; tries += 1) {
      const wait = backoffDelay(tries, LEASE_WAIT);
      const reply = await this.call<LeaseBody>({
        op: "Machines_create_lease",
        method: "POST",
        path,
        body: { ttl: this.options.leaseTtlSeconds ?? 60, description },
        accept: [404, 409],
      });
      if (reply.status === 404) return "missing" as const;
      if (reply.status !== 409) {
        nonce = leaseData(reply.body)?.nonce;
        if (!nonce) throw new ProvisionerError("backend_error", `Fly lease answer without a nonce`, true);
        break;
      }
      const held = await this.call<LeaseBody>({
        op: "Machines_show_lease",
        method: "GET",
        path,
        accept: [404],
      });
      const data = held.status === 200 ? leaseData(held.body) : undefined;
      if (data?.description === description && data.nonce) {
        nonce = data.nonce;
        break;
      }
      if (this.now() + wait > deadline) {
        throw new ProvisionerError(
          "conflict",
          `Fly machine ${machineId} is leased by ${data?.owner ?? "someone else"} (${data?.description ?? "no description"}); gave up waiting`,
          true,
          { machineId, flyRequestId: reply.requestId },
        );
      }
      await this.pause(wait);
    }
    try {
      return await fn(nonce);
    } finally {
      try {
        // Not tied to the call's signal: the lease is released even when the call was abandoned.
        await this.api.call({
          op: "Machines_release_lease",
          method: "DELETE",
          path,
          nonce,
          accept: [404, 409],
        });
      } catch (error) {
        // The lease expires after its TTL anyway; a failed release only delays the next holder.
        this.options.logger?.warn({ machineId, error: safeMessage(error) }, "fly lease release failed");
      }
    }
  }

  /** Long-polls /wait (60 s per call at most, 408 means keep waiting) until the state or the deadline. */
  private async waitFor(machineId: string, state: "started" | "stopped" | "suspended" | "destroyed") {
    const deadline = this.now() + (this.options.waitDeadlineMs ?? 300_000);
    for (;;) {
      const remaining = deadline - this.now();
      const timeout = Math.max(1, Math.min(60, Math.ceil(remaining / 1000)));
      const reply = await this.call<{ state?: string }>({
        op: "Machines_wait",
        method: "GET",
        path: this.path`/machines/${machineId}/wait`,
        query: { state, timeout: String(timeout) },
        accept: [404, 408],
        timeoutMs: timeout * 1000 + (this.options.requestTimeoutMs ?? 30_000),
      });
      if (reply.status === 200) return;
      if (reply.status === 404) {
        if (state === "destroyed") return;
        throw new ProvisionerError(
          "not_found",
          `Fly machine ${machineId} disappeared while waiting for ${state}`,
          false,
        );
      }
      if (this.now() >= deadline) {
        const machine = await this.getMachine(machineId).catch(() => null);
        throw new ProvisionerError(
          "timeout",
          `Fly machine ${machineId} did not reach ${state} within ${this.options.waitDeadlineMs ?? 300_000} ms (now ${machine?.state ?? "unknown"})`,
          true,
          { machineId, state: machine?.state, flyRequestId: reply.requestId },
        );
      }
    }
  }

  private async deleteVolume(volume: FlyVolume): Promise<void> {
    const deadline = this.now() + (this.options.waitDeadlineMs ?? 300_000);
    for (let tries = 1; ; tries += 1) {
      const wait = backoffDelay(tries, VOLUME_DETACH_WAIT);
      const reply = await this.call({
        op: "Volume_delete",
        method: "DELETE",
        path: this.path`/volumes/${volume.id}`,
        accept: [404, 412],
      });
      if (reply.status !== 412) return;
      // Still attached: the machine is being destroyed. Give flyd a moment.
      if (this.now() + wait > deadline) throw flyError({ op: "Volume_delete" }, reply);
      await this.pause(wait);
    }
  }

  // ---- lookups -------------------------------------------------------------------------------------------------

  private async getMachine(machineId: string): Promise<FlyMachine | null> {
    const reply = await this.call<FlyMachine>({
      op: "Machines_show",
      method: "GET",
      path: this.path`/machines/${machineId}`,
      accept: [404],
    });
    if (reply.status === 404 || reply.body.state === "destroyed") return null;
    return reply.body;
  }

  /** Every live machine of the workspace: the handle's id, then the metadata filter (which also finds strays). */
  private async findMachines(workspaceId: string, handle: Handle | null): Promise<FlyMachine[]> {
    const found = new Map<string, FlyMachine>();
    const id = handleString(handle, "machineId");
    if (id) {
      const machine = await this.getMachine(id);
      if (machine && machine.config?.metadata?.[LABELS.workspaceId] === workspaceId)
        found.set(machine.id, machine);
    }
    const reply = await this.call<FlyMachine[]>({
      op: "Machines_list",
      method: "GET",
      path: this.path`/machines`,
      query: { [`metadata.${LABELS.workspaceId}`]: workspaceId },
    });
    for (const machine of reply.body) {
      if (machine.state !== "destroyed" && machine.state !== "destroying" && !found.has(machine.id)) {
        found.set(machine.id, machine);
      }
    }
    return [...found.values()];
  }

  private async findMachine(workspaceId: string, handle: Handle | null): Promise<FlyMachine | null> {
    const id = handleString(handle, "machineId");
    if (id) {
      const machine = await this.getMachine(id);
      if (machine && machine.config?.metadata?.[LABELS.workspaceId] === workspaceId) return machine;
    }
    const machines = await this.findMachines(workspaceId, null);
    const name = resourceName(workspaceId);
    return machines.find((m) => m.name === name) ?? machines[0] ?? null;
  }

  private async listVolumes(): Promise<FlyVolume[]> {
    const reply = await this.call<FlyVolume[]>({
      op: "Volumes_list",
      method: "GET",
      path: this.path`/volumes`,
    });
    return reply.body.filter((v) => !GONE_VOLUME_STATES.has(v.state ?? ""));
  }

  private async findVolumes(workspaceId: string, handle: Handle | null): Promise<FlyVolume[]> {
    const name = flyVolumeName(workspaceId);
    const id = handleString(handle, "volumeId");
    return (await this.listVolumes()).filter((v) => v.name === name || v.id === id);
  }

  private async findVolume(
    workspaceId: string,
    handle: Handle | null,
    machine?: FlyMachine,
  ): Promise<FlyVolume | null> {
    const volumes = await this.findVolumes(workspaceId, handle);
    const mounted = machine?.config?.mounts?.[0]?.volume;
    return volumes.find((v) => v.id === mounted) ?? volumes[0] ?? null;
  }

  private handleFor(workspaceId: string, machine: FlyMachine, volume: FlyVolume | null): FlyHandle {
    return {
      backend: "flyio",
      app: this.options.app,
      region: machine.region ?? volume?.region ?? this.options.region,
      machineId: machine.id,
      machineName: machine.name ?? resourceName(workspaceId),
      volumeId: volume?.id ?? machine.config?.mounts?.[0]?.volume,
      volumeName: flyVolumeName(workspaceId),
      agentUrl: this.agentUrl(machine),
    };
  }

  /** Serialises operations on one workspace inside this process (Fly volume names are not unique). */
  /**
   * Runs one lifecycle call of a workspace after the ones before it, under its `signal`: every Fly request and wait
   * it makes (see `call`, `pause`) ends with a retryable `timeout` when the signal fires.
   */
  private locked<T>(workspaceId: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(workspaceId) ?? Promise.resolve();
    const run = () => this.callSignal.run(signal, fn);
    const next = previous.then(run, run);
    const tail = next.catch(() => undefined);
    this.locks.set(workspaceId, tail);
    void tail.then(() => {
      if (this.locks.get(workspaceId) === tail) this.locks.delete(workspaceId);
    });
    return next;
  }
}

interface LeaseData {
  nonce?: string;
  owner?: string;
  description?: string;
  expires_at?: number;
}
type LeaseBody = { data?: LeaseData } & LeaseData;

/** Fly answers `{status, data: {nonce, …}}`; the OpenAPI document describes the lease flat. Accept both. */
function leaseData(body: LeaseBody | undefined): LeaseData | undefined {
  if (!body || typeof body !== "object") return undefined;
  return body.data ?? body;
}

/** An error's message when it is one of ours (built from safe fields), else only its class. */
function safeMessage(error: unknown): string {
  if (error instanceof ProvisionerError) return error.message;
  return `unexpected ${error instanceof Error ? error.name : typeof error}`;
}

export function createFlyProvisioner(options: FlyProvisionerOptions): FlyProvisioner {
  return new FlyProvisioner(options);
}

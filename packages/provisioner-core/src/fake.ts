/**
 * A scripted in-memory backend for testing the layers above (operations engine, API): it holds workspace state
 * (volumes and instances with their states), not a log of calls, and can be told to be slow, to fail, to hang or to
 * crash part-way through a provision.
 */
import { ProvisionerError } from "./errors.ts";
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
} from "./provisioner.ts";
import { tierLimits } from "./tiers.ts";

export type FakeMethod = "provision" | "start" | "stop" | "suspend" | "destroy" | "status" | "listManaged";
export type FakeInstanceState = "running" | "stopped" | "suspended";
/** Steps the fake reports through `ctx.step`, in order, during provision and start. */
export type FakeStep = "image_ready" | "volume_ready" | "instance_created" | "instance_started";

export interface FakeVolume {
  id: string;
}

export interface FakeInstance {
  id: string;
  state: FakeInstanceState;
  exitCode: number | null;
  runtime: string;
  tier: WorkspaceSpec["tier"];
  env: Record<string, string>;
}

export interface FakeWorkspace {
  workspaceId: string;
  orgId: string;
  deployment: string;
  volume: FakeVolume | null;
  instance: FakeInstance | null;
}

export interface FakeProvisionerOptions {
  name?: string;
  /** Delay before each call does its work; one number for all methods or per method. Default 0. */
  latencyMs?: number | Partial<Record<FakeMethod, number>>;
  /** Whether the fake can suspend (default true); when false, suspend stops and says so. */
  suspend?: boolean;
  /** With `suspend`, tiers with more memory than this are stopped instead (mirrors Fly's limit). */
  suspendMaxMemoryMb?: number;
  /** Runtimes whose image "does not exist": provision throws `image_unavailable`. */
  unavailableRuntimes?: readonly string[];
  /** How long a started instance reports `starting` before `running` (default 0). */
  bootMs?: number;
  /**
   * Assign each instance an address, as managed backends do: the instance's env gets it as `AGENT_PUBLIC_URL` and
   * the handle as `agentUrl`. Default: none (like docker on the host's network).
   */
  agentUrl?: (workspaceId: string, instanceId: string) => string;
  now?: () => number;
}

export interface FakeProvisioner extends Provisioner {
  /** The next `times` calls of `method` throw `error` before doing anything. */
  failNext(method: FakeMethod, error?: Error, times?: number): void;
  /**
   * The next `times` calls of `method` hang until their `ctx.signal` aborts (then throw a retryable `timeout`
   * error) or `releaseHangs()` is called (then proceed normally).
   */
  hangNext(method: FakeMethod, times?: number): void;
  releaseHangs(): void;
  /** The next provision or start throws `error` right after reporting `step`, leaving what it made in place. */
  crashAfterStep(step: FakeStep, error?: Error): void;
  setLatency(method: FakeMethod, ms: number): void;
  /** A copy of one workspace's state, or undefined when it has nothing. */
  inspect(workspaceId: string): FakeWorkspace | undefined;
  /** Copies of every workspace's state. */
  workspaces(): FakeWorkspace[];
  /** The workspace's process exits on its own (crash, OOM): the instance becomes `stopped` with the code. */
  simulateExit(workspaceId: string, exitCode: number): void;
  /** The instance disappears behind the platform's back (host lost, manual delete); the volume stays. */
  simulateInstanceLoss(workspaceId: string): void;
  /** Calls currently hung by `hangNext`. */
  hangingCount(): number;
}

interface Fault {
  error: Error;
  times: number;
}

function defaultFault(method: string): Error {
  return new ProvisionerError("backend_unavailable", `fake backend: injected failure in ${method}`, true);
}

function clone<T>(value: T): T {
  return structuredClone(value);
}

export function createFakeProvisioner(opts: FakeProvisionerOptions = {}): FakeProvisioner {
  const name = opts.name ?? "fake";
  const now = opts.now ?? Date.now;
  const state = new Map<string, FakeWorkspace>();
  const startedAt = new Map<string, number>();
  const latency = new Map<FakeMethod, number>();
  const faults = new Map<FakeMethod, Fault[]>();
  const hangs = new Map<FakeMethod, number>();
  const hanging = new Set<() => void>();
  let crash: { step: FakeStep; error: Error } | null = null;
  let counter = 0;

  const methods: FakeMethod[] = ["provision", "start", "stop", "suspend", "destroy", "status", "listManaged"];
  for (const method of methods) {
    const value = typeof opts.latencyMs === "number" ? opts.latencyMs : (opts.latencyMs?.[method] ?? 0);
    latency.set(method, value);
  }

  const nextId = (kind: string) => `fake-${kind}-${++counter}`;

  function aborted(method: FakeMethod, signal: AbortSignal): ProvisionerError {
    return new ProvisionerError("timeout", `fake backend: ${method} aborted`, true, {
      reason: signal.reason instanceof Error ? signal.reason.message : String(signal.reason),
    });
  }

  function sleep(ms: number, method: FakeMethod, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(aborted(method, signal));
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        clearTimeout(timer);
        if (signal) reject(aborted(method, signal));
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  function hang(method: FakeMethod, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(aborted(method, signal));
    return new Promise((resolve, reject) => {
      const release = () => {
        hanging.delete(release);
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = () => {
        hanging.delete(release);
        if (signal) reject(aborted(method, signal));
      };
      hanging.add(release);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Latency, injected hangs and failures: everything that happens before a call does its work. */
  async function enter(method: FakeMethod, signal?: AbortSignal): Promise<void> {
    const pendingHangs = hangs.get(method) ?? 0;
    if (pendingHangs > 0) {
      hangs.set(method, pendingHangs - 1);
      await hang(method, signal);
    }
    await sleep(latency.get(method) ?? 0, method, signal);
    const queue = faults.get(method);
    const fault = queue?.[0];
    if (queue && fault) {
      fault.times -= 1;
      if (fault.times <= 0) queue.shift();
      throw fault.error;
    }
  }

  function step(ctx: ProvisionContext | undefined, name: FakeStep, detail?: string): void {
    ctx?.step?.(name, detail);
    if (crash && crash.step === name) {
      const { error } = crash;
      crash = null;
      throw error;
    }
  }

  function workspaceOf(spec: WorkspaceSpec): FakeWorkspace {
    const existing = state.get(spec.workspaceId);
    if (existing) {
      if (existing.orgId !== spec.orgId) {
        throw new ProvisionerError("conflict", `workspace ${spec.workspaceId} belongs to another org`, false);
      }
      return existing;
    }
    const created: FakeWorkspace = {
      workspaceId: spec.workspaceId,
      orgId: spec.orgId,
      deployment: spec.deployment,
      volume: null,
      instance: null,
    };
    state.set(spec.workspaceId, created);
    return created;
  }

  function handleOf(ws: FakeWorkspace): Handle {
    const agentUrl = ws.instance?.env.AGENT_PUBLIC_URL;
    return {
      backend: name,
      volumeId: ws.volume?.id ?? null,
      instanceId: ws.instance?.id ?? null,
      ...(opts.agentUrl && agentUrl ? { agentUrl } : {}),
    };
  }

  function checkOrg(ref: WorkspaceRef): FakeWorkspace | undefined {
    const ws = state.get(ref.workspaceId);
    if (ws && ws.orgId !== ref.orgId) {
      throw new ProvisionerError("conflict", `workspace ${ref.workspaceId} belongs to another org`, false);
    }
    return ws;
  }

  /** Creates what is missing and runs it; shared by provision and start. */
  function converge(spec: WorkspaceSpec, ctx: ProvisionContext | undefined): Handle {
    if (opts.unavailableRuntimes?.includes(spec.runtime)) {
      throw new ProvisionerError(
        "image_unavailable",
        `fake backend: no image for runtime "${spec.runtime}"`,
        false,
        {
          runtime: spec.runtime,
        },
      );
    }
    step(ctx, "image_ready", spec.runtime);
    const ws = workspaceOf(spec);
    if (!ws.volume) ws.volume = { id: nextId("vol") };
    step(ctx, "volume_ready", ws.volume.id);
    if (!ws.instance) {
      const id = nextId("inst");
      const address = opts.agentUrl?.(spec.workspaceId, id);
      ws.instance = {
        id,
        state: "stopped",
        exitCode: null,
        runtime: spec.runtime,
        tier: spec.tier,
        env: address ? { ...spec.env, AGENT_PUBLIC_URL: address } : { ...spec.env },
      };
    }
    step(ctx, "instance_created", ws.instance.id);
    if (ws.instance.state !== "running") {
      ws.instance.state = "running";
      ws.instance.exitCode = null;
      startedAt.set(spec.workspaceId, now());
    }
    step(ctx, "instance_started", ws.instance.id);
    return handleOf(ws);
  }

  function capabilities(): Capabilities {
    const suspend = opts.suspend ?? true;
    return suspend && opts.suspendMaxMemoryMb !== undefined
      ? { suspend, suspendMaxMemoryMb: opts.suspendMaxMemoryMb }
      : { suspend };
  }

  const fake: FakeProvisioner = {
    name,
    capabilities,

    async provision(spec, _handle, ctx) {
      await enter("provision", ctx?.signal);
      return converge(spec, ctx);
    },

    async start(spec, _handle, ctx) {
      await enter("start", ctx?.signal);
      const existing = state.get(spec.workspaceId);
      if (ctx?.recreate && existing) existing.instance = null;
      return converge(spec, ctx);
    },

    async stop(ref, ctx) {
      await enter("stop", ctx?.signal);
      const ws = checkOrg(ref);
      if (ws?.instance && ws.instance.state !== "stopped") {
        ws.instance.state = "stopped";
        ws.instance.exitCode = 0;
      }
    },

    async suspend(ref, ctx): Promise<SuspendResult> {
      await enter("suspend", ctx?.signal);
      const ws = checkOrg(ref);
      const caps = capabilities();
      const tooLarge =
        ws?.instance && caps.suspendMaxMemoryMb !== undefined
          ? tierLimits(ws.instance.tier).memoryMb > caps.suspendMaxMemoryMb
          : false;
      if (!caps.suspend || tooLarge) {
        if (ws?.instance) {
          ws.instance.state = "stopped";
          ws.instance.exitCode = 0;
        }
        return {
          suspended: false,
          reason: caps.suspend
            ? `fake backend cannot suspend more than ${caps.suspendMaxMemoryMb} MB; stopped instead`
            : "fake backend cannot suspend; stopped instead",
        };
      }
      if (!ws?.instance) {
        throw new ProvisionerError(
          "not_found",
          `workspace ${ref.workspaceId} has no instance to suspend`,
          false,
        );
      }
      if (ws.instance.state === "running") ws.instance.state = "suspended";
      return { suspended: ws.instance.state === "suspended" };
    },

    async destroy(ref, ctx) {
      await enter("destroy", ctx?.signal);
      checkOrg(ref);
      state.delete(ref.workspaceId);
      startedAt.delete(ref.workspaceId);
    },

    async status(ref): Promise<RuntimeStatus> {
      await enter("status");
      const ws = checkOrg(ref);
      if (!ws?.instance) {
        return { state: "missing", detail: ws?.volume ? "instance missing; volume kept" : "no resources" };
      }
      const { instance } = ws;
      if (instance.state === "running") {
        const since = startedAt.get(ref.workspaceId) ?? 0;
        return now() - since < (opts.bootMs ?? 0) ? { state: "starting" } : { state: "running" };
      }
      if (instance.state === "suspended") return { state: "suspended" };
      return { state: "stopped", detail: `exited with code ${instance.exitCode ?? 0}` };
    },

    async listManaged(): Promise<ManagedResource[]> {
      await enter("listManaged");
      const out: ManagedResource[] = [];
      for (const ws of state.values()) {
        if (ws.volume)
          out.push({ kind: "volume", id: ws.volume.id, workspaceId: ws.workspaceId, orgId: ws.orgId });
        if (ws.instance) {
          out.push({
            kind: "instance",
            id: ws.instance.id,
            workspaceId: ws.workspaceId,
            orgId: ws.orgId,
            state: ws.instance.state,
          });
        }
      }
      return out;
    },

    failNext(method, error = defaultFault(method), times = 1) {
      const queue = faults.get(method) ?? [];
      queue.push({ error, times });
      faults.set(method, queue);
    },

    hangNext(method, times = 1) {
      hangs.set(method, (hangs.get(method) ?? 0) + times);
    },

    releaseHangs() {
      for (const release of [...hanging]) release();
    },

    crashAfterStep(stepName, error) {
      crash = {
        step: stepName,
        error:
          error ?? new ProvisionerError("backend_error", `fake backend: crashed after ${stepName}`, true),
      };
    },

    setLatency(method, ms) {
      latency.set(method, ms);
    },

    inspect(workspaceId) {
      const ws = state.get(workspaceId);
      return ws ? clone(ws) : undefined;
    },

    workspaces() {
      return [...state.values()].map(clone);
    },

    simulateExit(workspaceId, exitCode) {
      const instance = state.get(workspaceId)?.instance;
      if (!instance) throw new Error(`fake backend: ${workspaceId} has no instance`);
      instance.state = "stopped";
      instance.exitCode = exitCode;
    },

    simulateInstanceLoss(workspaceId) {
      const ws = state.get(workspaceId);
      if (ws) ws.instance = null;
    },

    hangingCount() {
      return hanging.size;
    },
  };
  return fake;
}

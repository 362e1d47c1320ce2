import type { IncomingMessage } from "node:http";
import { HttpError, hex, ulid } from "./http.ts";

export type MachineState =
  | "created"
  | "starting"
  | "started"
  | "stopping"
  | "stopped"
  | "suspending"
  | "suspended"
  | "destroying"
  | "destroyed";

export interface MachineRecord {
  id: string;
  name: string;
  region: string;
  state: MachineState;
  config: Record<string, unknown>;
  instanceId: string;
  createdAt: string;
  updatedAt: string;
  privateIp: string;
  lease: { nonce: string; owner: string; description: string; expiresAt: number } | null;
  events: { id: string; type: string; status: string; source: string; timestamp: number }[];
}

export interface VolumeRecord {
  id: string;
  name: string;
  region: string;
  sizeGb: number;
  state: "created" | "destroyed";
  attachedMachineId: string | null;
  createdAt: string;
  encrypted: boolean;
}

export interface AppRecord {
  name: string;
  id: string;
  machines: Map<string, MachineRecord>;
  volumes: Map<string, VolumeRecord>;
}

export interface TransitionDelays {
  /** created → starting → started after a create. */
  bootMs: number;
  /** suspended → started. */
  resumeMs: number;
  stopMs: number;
  suspendMs: number;
  destroyMs: number;
}

export const DEFAULT_DELAYS: TransitionDelays = {
  bootMs: 10,
  resumeMs: 3,
  stopMs: 5,
  suspendMs: 5,
  destroyMs: 5,
};
const TRANSIENT: readonly MachineState[] = ["created", "starting", "stopping", "suspending", "destroying"];

/**
 * The emulated organisation: apps, their machines and volumes, regions out of capacity, and the timers that move
 * machines through Fly's state machine. Lookups throw the `HttpError` Fly answers with (404 for an unknown app).
 */
export class FlyState {
  private readonly apps = new Map<string, AppRecord>();
  private readonly noCapacity = new Map<string, { machines: boolean; volumes: boolean }>();
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private closing = false;

  constructor(readonly delays: TransitionDelays) {}

  createApp(name: string): AppRecord {
    const existing = this.apps.get(name);
    if (existing) return existing;
    const app: AppRecord = { name, id: hex(8), machines: new Map(), volumes: new Map() };
    this.apps.set(name, app);
    return app;
  }

  hasApp(name: string): boolean {
    return this.apps.has(name);
  }

  app(name: string | undefined): AppRecord {
    const app = name ? this.apps.get(name) : undefined;
    if (!app) throw new HttpError(404, "app not found");
    return app;
  }

  machine(app: AppRecord, id: string | undefined): MachineRecord {
    const m = id ? app.machines.get(id) : undefined;
    if (!m) throw new HttpError(404, "machine not found");
    return m;
  }

  /** Live (not destroyed) machines of an app. */
  machines(app: string): MachineRecord[] {
    return [...(this.apps.get(app)?.machines.values() ?? [])].filter((m) => m.state !== "destroyed");
  }

  /** Live (not destroyed) volumes of an app. */
  volumes(app: string): VolumeRecord[] {
    return [...(this.apps.get(app)?.volumes.values() ?? [])].filter((v) => v.state !== "destroyed");
  }

  setCapacity(region: string, available: boolean, scope: { volumes?: boolean } = {}): void {
    if (available) this.noCapacity.delete(region);
    else this.noCapacity.set(region, { machines: true, volumes: scope.volumes ?? false });
  }

  hasCapacity(region: string, kind: "machines" | "volumes"): boolean {
    return !this.noCapacity.get(region)?.[kind];
  }

  setState(app: AppRecord, m: MachineRecord, state: MachineState, source = "flyd"): void {
    m.state = state;
    m.updatedAt = new Date().toISOString();
    m.events.unshift({ id: ulid(), type: state, status: state, source, timestamp: Date.now() });
    if (state === "destroyed") {
      m.lease = null;
      for (const v of app.volumes.values()) if (v.attachedMachineId === m.id) v.attachedMachineId = null;
    }
    const set = this.waiters.get(m.id);
    if (set) for (const wake of [...set]) wake();
  }

  /** Moves through `steps` one after another, abandoning the chain if something else changed the state. */
  chain(app: AppRecord, m: MachineRecord, steps: [MachineState, number][]): void {
    const [first, ...rest] = steps;
    if (!first) return;
    const [state, ms] = first;
    const expected = m.instanceId + m.state;
    this.later(ms, () => {
      if (m.instanceId + m.state !== expected) return;
      this.setState(app, m, state);
      this.chain(app, m, rest);
    });
  }

  checkLease(m: MachineRecord, headers: IncomingMessage["headers"]): void {
    const lease = m.lease;
    if (!lease || lease.expiresAt * 1000 <= Date.now()) return;
    if (headers["fly-machine-lease-nonce"] !== lease.nonce) {
      throw new HttpError(
        409,
        `machine ID ${m.id} lease currently held by ${lease.owner}, expires at ${new Date(lease.expiresAt * 1000).toISOString()}`,
      );
    }
  }

  createMachine(
    app: AppRecord,
    req: {
      name?: string;
      region?: string;
      config?: Record<string, unknown>;
      skip_launch?: boolean;
    },
  ): MachineRecord {
    const config = validConfig(req.config);
    const name = req.name ?? `m-${hex(6)}`;
    for (const other of app.machines.values()) {
      if (other.name === name && other.state !== "destroyed") {
        throw new HttpError(422, `a machine with name '${name}' already exists`);
      }
    }
    const mounts = (config.mounts ?? []) as { volume?: string; path?: string }[];
    if (mounts.length > 1) throw new HttpError(400, "a machine can mount at most one volume");
    const volume = mounts[0]?.volume ? app.volumes.get(mounts[0].volume) : undefined;
    if (mounts[0] && (!volume || volume.state === "destroyed")) {
      throw new HttpError(404, `volume ${mounts[0].volume ?? ""} not found`);
    }
    const region = req.region ?? volume?.region ?? "ord";
    if (volume && volume.region !== region) {
      throw new HttpError(400, `volume ${volume.id} is in region ${volume.region}, not ${region}`);
    }
    if (volume?.attachedMachineId) {
      throw new HttpError(412, `failed_precondition: volume ${volume.id} is attached to another machine`);
    }
    if (!this.hasCapacity(region, "machines")) {
      throw new HttpError(
        412,
        `insufficient resources available to fulfill request: could not reserve resource for machine in ${region}`,
        "insufficient_capacity",
      );
    }
    const now = new Date().toISOString();
    const m: MachineRecord = {
      id: hex(7),
      name,
      region,
      state: "created",
      config,
      instanceId: ulid(),
      createdAt: now,
      updatedAt: now,
      privateIp: `fdaa:0:1:a7b:${hex(2)}:${hex(2)}:${hex(2)}:2`,
      lease: null,
      events: [{ id: ulid(), type: "launch", status: "created", source: "user", timestamp: Date.now() }],
    };
    app.machines.set(m.id, m);
    if (volume) volume.attachedMachineId = m.id;
    if (!req.skip_launch) {
      const half = Math.floor(this.delays.bootMs / 2);
      this.chain(app, m, [
        ["starting", half],
        ["started", this.delays.bootMs - half],
      ]);
    }
    return m;
  }

  /** Takes (or, for its holder, extends) the machine's lease for `ttlSeconds`. */
  lease(m: MachineRecord, ttlSeconds: number, description: string): void {
    const expiresAt = Math.floor(Date.now() / 1000) + ttlSeconds;
    const held = m.lease && m.lease.expiresAt * 1000 > Date.now() ? m.lease : null;
    m.lease = held
      ? { ...held, expiresAt }
      : { nonce: hex(6), owner: "emulator@example.com", description, expiresAt };
  }

  /**
   * Replaces the machine's whole config (Fly has no partial update; name, region and the mounted volume stay) as a
   * new version, and launches it unless `skip_launch`: a created, stopped or suspended machine boots (a suspended
   * one's snapshot is discarded), a started one restarts on the new config. A machine in a transition refuses (412).
   */
  updateMachine(
    app: AppRecord,
    m: MachineRecord,
    req: { name?: string; region?: string; config?: Record<string, unknown>; skip_launch?: boolean },
  ): MachineRecord {
    if (m.state === "destroyed") throw new HttpError(404, "machine not found");
    const config = validConfig(req.config);
    if (req.name !== undefined && req.name !== m.name)
      throw new HttpError(400, "a machine's name cannot change");
    if (req.region !== undefined && req.region !== m.region) {
      throw new HttpError(400, "a machine's region cannot change");
    }
    const mounted = (m.config.mounts ?? []) as { volume?: string }[];
    const mounts = (config.mounts ?? []) as { volume?: string }[];
    if (mounts.length !== mounted.length || mounts.some((mount, i) => mount.volume !== mounted[i]?.volume)) {
      throw new HttpError(400, "a machine's volume cannot change on update");
    }
    if (TRANSIENT.includes(m.state) && m.state !== "created") {
      throw new HttpError(
        412,
        `failed_precondition: unable to update machine from current state: '${m.state}'`,
      );
    }
    m.config = config;
    m.instanceId = ulid();
    m.updatedAt = new Date().toISOString();
    m.events.unshift({ id: ulid(), type: "update", status: m.state, source: "user", timestamp: Date.now() });
    if (req.skip_launch) return m;
    if (m.state === "started") {
      this.setState(app, m, "stopping", "user");
      this.chain(app, m, [
        ["starting", this.delays.stopMs],
        ["started", this.delays.bootMs],
      ]);
    } else {
      this.setState(app, m, "starting", "user");
      this.chain(app, m, [["started", this.delays.bootMs]]);
    }
    return m;
  }

  /**
   * Resolves once `m` reaches one of `wanted` (`settled`: any non-transient state); rejects with Fly's 408 after
   * `limitMs`, 400 if the machine is destroyed, 503 if the emulator closes first.
   */
  async waitFor(m: MachineRecord, wanted: string[], limitMs: number): Promise<void> {
    const reached = () =>
      wanted.includes(m.state) || (wanted.includes("settled") && !TRANSIENT.includes(m.state));
    if (reached()) return;
    if (m.state === "destroyed") throw new HttpError(400, `machine ${m.id} is destroyed`);
    await new Promise<void>((resolve, reject) => {
      let set = this.waiters.get(m.id);
      if (!set) {
        set = new Set();
        this.waiters.set(m.id, set);
      }
      const waiters = set;
      const finish = (outcome: () => void) => {
        clearTimeout(timer);
        this.timers.delete(timer);
        waiters.delete(wake);
        outcome();
      };
      const wake = () => {
        if (reached()) finish(resolve);
        else if (m.state === "destroyed") {
          finish(() => reject(new HttpError(400, `machine ${m.id} was destroyed`)));
        } else if (this.closing) finish(() => reject(new HttpError(503, "emulator shutting down")));
      };
      const timer = setTimeout(() => {
        finish(() =>
          reject(
            new HttpError(
              408,
              `deadline_exceeded: machine failed to reach desired state, ${wanted.join(",")}, current state: ${m.state}`,
            ),
          ),
        );
      }, limitMs);
      this.timers.add(timer);
      waiters.add(wake);
    });
  }

  delay(ms: number): Promise<void> {
    return new Promise((resolve) => this.later(ms, resolve));
  }

  /** Stops every pending transition and answers every blocked `/wait`. */
  close(): void {
    this.closing = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const set of this.waiters.values()) for (const wake of set) wake();
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }
}

/** A machine config as create and update require it: an object naming an image. */
function validConfig(config: Record<string, unknown> | undefined): Record<string, unknown> {
  if (!config || typeof config.image !== "string" || config.image === "") {
    throw new HttpError(400, "invalid config: image is required");
  }
  return config;
}

import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { OpenApiValidator } from "./openapi.ts";

/**
 * A stateful, in-process stand-in for the subset of the Fly Machines API that the flyio backend uses.
 * Machines and volumes follow Fly's state machine with small, configurable transition delays; leases, the
 * `/wait` endpoint, error envelopes and status codes behave as Fly documents them; faults are injected per test.
 * Every exchange is checked against the official OpenAPI document when a validator is given.
 */

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

export type FaultAction =
  | {
      kind: "status";
      status: number;
      retryAfter?: string;
      /** The error text; a function builds it from the request (an answer that quotes what was sent). */
      error?: string | ((req: FaultRequest) => string);
    }
  /** Apply the request, then destroy the socket without answering. */
  | { kind: "drop-after" }
  /** Destroy the socket before the request is applied. */
  | { kind: "drop-before" }
  /** Wait, then handle the request normally. */
  | { kind: "slow"; delayMs: number };

export interface FaultRequest {
  operationId: string;
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
}

export type Fault = FaultAction & {
  /** OpenAPI operationId (`Machines_create`, `Volume_delete`, …) or `*`. */
  operation: string;
  /** How many matching requests it applies to; default 1. */
  times?: number;
  when?: (req: FaultRequest) => boolean;
};

export interface RateLimit {
  /** Tokens per second per machine and action (Fly: 1/s with bursts to 3; get machine 5/s, bursts to 10). */
  perSecond: number;
  burst: number;
  getPerSecond: number;
  getBurst: number;
  /** Fly does not document Retry-After; when set, 429 answers carry it. */
  retryAfterSeconds?: number;
}

export interface FlyEmulatorOptions {
  token?: string;
  apps?: string[];
  delays?: Partial<TransitionDelays>;
  /** Longest a `/wait` call blocks, whatever its `timeout` (which is in seconds and at most 60). */
  waitCapMs?: number;
  rateLimit?: RateLimit;
  /** Checks every request received and response sent; violations collect in `violations`. */
  validator?: OpenApiValidator | null;
  /** Largest memory a machine may have to be suspended. */
  suspendMaxMemoryMb?: number;
}

export interface ExchangeLog {
  operationId: string;
  method: string;
  path: string;
  status: number | "dropped";
}

const DEFAULT_DELAYS: TransitionDelays = { bootMs: 10, resumeMs: 3, stopMs: 5, suspendMs: 5, destroyMs: 5 };
const TRANSIENT: readonly MachineState[] = ["created", "starting", "stopping", "suspending", "destroying"];

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly flyStatus?: "unknown" | "insufficient_capacity",
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

function hex(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}

function ulid(): string {
  const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  let out = "";
  for (const b of randomBytes(26)) out += alphabet[b % 32];
  return out;
}

interface Route {
  method: string;
  pattern: RegExp;
  operationId: string;
  handler: (ctx: HandlerContext) => Promise<Reply> | Reply;
}

interface HandlerContext {
  params: string[];
  query: URLSearchParams;
  headers: IncomingMessage["headers"];
  body: unknown;
}

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export class FlyEmulator {
  readonly token: string;
  readonly delays: TransitionDelays;
  readonly waitCapMs: number;
  readonly suspendMaxMemoryMb: number;
  readonly violations: string[] = [];
  readonly log: ExchangeLog[] = [];
  private readonly apps = new Map<string, AppRecord>();
  private readonly faults: (Fault & { remaining: number })[] = [];
  private readonly noCapacity = new Map<string, { machines: boolean; volumes: boolean }>();
  private readonly counts = new Map<string, number>();
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly routes: Route[];
  private readonly validator: OpenApiValidator | null;
  private readonly rateLimit: RateLimit | undefined;
  private server: Server | null = null;
  private baseUrl = "";
  private requestSeq = 0;
  private closing = false;

  constructor(options: FlyEmulatorOptions = {}) {
    this.token = options.token ?? "fly-emulator-token";
    this.delays = { ...DEFAULT_DELAYS, ...options.delays };
    this.waitCapMs = options.waitCapMs ?? 60_000;
    this.suspendMaxMemoryMb = options.suspendMaxMemoryMb ?? 2048;
    this.validator = options.validator ?? null;
    this.rateLimit = options.rateLimit;
    for (const name of options.apps ?? []) this.createApp(name);
    this.routes = this.buildRoutes();
  }

  /** Starts listening on 127.0.0.1 at a free port; returns the base URL (without `/v1`). */
  async start(): Promise<string> {
    const server = createServer((req, res) => {
      void this.handle(req, res);
    });
    this.server = server;
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    this.baseUrl = `http://127.0.0.1:${port}`;
    return this.baseUrl;
  }

  get url(): string {
    if (!this.baseUrl) throw new Error("emulator not started");
    return this.baseUrl;
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const set of this.waiters.values()) for (const wake of set) wake();
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    this.server = null;
  }

  // ---- test controls -------------------------------------------------------------------------------------------

  createApp(name: string): AppRecord {
    const existing = this.apps.get(name);
    if (existing) return existing;
    const app: AppRecord = { name, id: hex(8), machines: new Map(), volumes: new Map() };
    this.apps.set(name, app);
    return app;
  }

  inject(fault: Fault): void {
    this.faults.push({ ...fault, remaining: fault.times ?? 1 });
  }

  /** Armed faults not yet consumed by a matching request. */
  pendingFaults(): number {
    return this.faults.reduce((sum, f) => sum + f.remaining, 0);
  }

  clearFaults(): void {
    this.faults.length = 0;
  }

  /** Makes machine (and optionally volume) creates in `region` answer `insufficient_capacity`. */
  setCapacity(region: string, available: boolean, scope: { volumes?: boolean } = {}): void {
    if (available) this.noCapacity.delete(region);
    else this.noCapacity.set(region, { machines: true, volumes: scope.volumes ?? false });
  }

  /** Live (not destroyed) machines of an app. */
  machines(app: string): MachineRecord[] {
    return [...(this.apps.get(app)?.machines.values() ?? [])].filter((m) => m.state !== "destroyed");
  }

  /** Live (not destroyed) volumes of an app. */
  volumes(app: string): VolumeRecord[] {
    return [...(this.apps.get(app)?.volumes.values() ?? [])].filter((v) => v.state !== "destroyed");
  }

  /** Requests received per OpenAPI operationId. */
  requestCounts(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }

  resetCounts(): void {
    this.counts.clear();
    this.log.length = 0;
  }

  /** Total milliseconds of transition delay a provision goes through (boot). */
  totalDelayMs(kind: keyof TransitionDelays): number {
    return this.delays[kind];
  }

  // ---- HTTP plumbing -------------------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const method = (req.method ?? "GET").toUpperCase();
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString("utf8");
    const requestId = `01EMU${String(++this.requestSeq).padStart(8, "0")}${hex(4).toUpperCase()}`;
    const path = url.pathname.startsWith("/v1/") ? url.pathname.slice(3) : url.pathname;
    let route: Route | undefined;
    let match: RegExpExecArray | null = null;
    for (const r of this.routes) {
      if (r.method !== method) continue;
      match = r.pattern.exec(path);
      if (match) {
        route = r;
        break;
      }
    }
    const operationId = route?.operationId ?? "unknown";
    this.counts.set(operationId, (this.counts.get(operationId) ?? 0) + 1);

    let body: unknown;
    let reply: Reply;
    try {
      if (raw.length > 0) {
        try {
          body = JSON.parse(raw);
        } catch {
          throw new HttpError(400, "invalid JSON body");
        }
      }
      if (this.validator && url.pathname.startsWith("/v1/")) {
        for (const issue of this.validator.validateRequest({
          method,
          path,
          query: url.searchParams,
          headers: req.headers,
          body,
        })) {
          this.violations.push(issue);
        }
      }
      if (!url.pathname.startsWith("/v1/") || !route || !match)
        throw new HttpError(404, "404 page not found");
      if (req.headers.authorization !== `Bearer ${this.token}`) {
        throw new HttpError(401, "You must be authenticated to view this.");
      }
      const params = match.slice(1).map((p) => decodeURIComponent(p));
      const faultRequest: FaultRequest = {
        operationId,
        method,
        path,
        params: {},
        query: url.searchParams,
        body,
      };
      const fault = this.takeFault(faultRequest);
      if (fault?.kind === "slow") await this.delay(fault.delayMs);
      if (fault?.kind === "drop-before") {
        this.log.push({ operationId, method, path, status: "dropped" });
        req.socket.destroy();
        return;
      }
      if (fault?.kind === "status") {
        const headers: Record<string, string> = fault.retryAfter ? { "retry-after": fault.retryAfter } : {};
        const message = typeof fault.error === "function" ? fault.error(faultRequest) : fault.error;
        throw new HttpError(fault.status, message ?? defaultMessage(fault.status), undefined, headers);
      }
      this.checkRateLimit(operationId, params);
      reply = await route.handler({ params, query: url.searchParams, headers: req.headers, body });
      if (fault?.kind === "drop-after") {
        this.log.push({ operationId, method, path, status: "dropped" });
        req.socket.destroy();
        return;
      }
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      const envelope: Record<string, unknown> = { error: error.message };
      if (error.flyStatus) envelope.status = error.flyStatus;
      reply = { status: error.status, body: envelope, headers: error.headers };
    }
    if (this.validator && url.pathname.startsWith("/v1/") && route) {
      for (const issue of this.validator.validateResponse({
        method,
        path,
        status: reply.status,
        body: reply.body,
      })) {
        this.violations.push(issue);
      }
    }
    this.log.push({ operationId, method, path, status: reply.status });
    const payload = reply.body === undefined ? "" : JSON.stringify(reply.body);
    res.writeHead(reply.status, {
      "content-type": "application/json; charset=utf-8",
      "fly-request-id": requestId,
      ...reply.headers,
    });
    res.end(payload);
  }

  private takeFault(req: FaultRequest): FaultAction | null {
    const index = this.faults.findIndex(
      (f) =>
        f.remaining > 0 &&
        (f.operation === "*" || f.operation === req.operationId) &&
        (!f.when || f.when(req)),
    );
    if (index < 0) return null;
    const fault = this.faults[index];
    if (!fault) return null;
    fault.remaining -= 1;
    if (fault.remaining <= 0) this.faults.splice(index, 1);
    return fault;
  }

  private checkRateLimit(operationId: string, params: string[]): void {
    const limit = this.rateLimit;
    const machineId = params[1];
    if (!limit || !machineId || !operationId.startsWith("Machines_") || operationId === "Machines_wait")
      return;
    const isGet = operationId === "Machines_show";
    const rate = isGet ? limit.getPerSecond : limit.perSecond;
    const burst = isGet ? limit.getBurst : limit.burst;
    const key = `${machineId}:${operationId}`;
    const now = Date.now();
    const bucket = this.buckets.get(key) ?? { tokens: burst, at: now };
    bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * rate);
    bucket.at = now;
    this.buckets.set(key, bucket);
    if (bucket.tokens < 1) {
      const headers: Record<string, string> =
        limit.retryAfterSeconds !== undefined ? { "retry-after": String(limit.retryAfterSeconds) } : {};
      throw new HttpError(429, "rate limit exceeded", undefined, headers);
    }
    bucket.tokens -= 1;
  }

  private delay(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  // ---- state machine -------------------------------------------------------------------------------------------

  private app(name: string | undefined): AppRecord {
    const app = name ? this.apps.get(name) : undefined;
    if (!app) throw new HttpError(404, "app not found");
    return app;
  }

  private machine(app: AppRecord, id: string | undefined): MachineRecord {
    const m = id ? app.machines.get(id) : undefined;
    if (!m) throw new HttpError(404, "machine not found");
    return m;
  }

  private setState(app: AppRecord, m: MachineRecord, state: MachineState, source = "flyd"): void {
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
  private chain(app: AppRecord, m: MachineRecord, steps: [MachineState, number][]): void {
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

  private checkLease(m: MachineRecord, headers: IncomingMessage["headers"]): void {
    const lease = m.lease;
    if (!lease || lease.expiresAt * 1000 <= Date.now()) return;
    if (headers["fly-machine-lease-nonce"] !== lease.nonce) {
      throw new HttpError(
        409,
        `machine ID ${m.id} lease currently held by ${lease.owner}, expires at ${new Date(lease.expiresAt * 1000).toISOString()}`,
      );
    }
  }

  private memoryMb(m: MachineRecord): number {
    const guest = (m.config.guest ?? {}) as { memory_mb?: number };
    return guest.memory_mb ?? 256;
  }

  private machineView(app: AppRecord, m: MachineRecord): Record<string, unknown> {
    void app;
    const image = String(m.config.image ?? "");
    const [repository = image, tag = "latest"] = image.split(":");
    return {
      id: m.id,
      name: m.name,
      state: m.state,
      region: m.region,
      instance_id: m.instanceId,
      private_ip: m.privateIp,
      config: m.config,
      image_ref: {
        registry: "registry-1.docker.io",
        repository,
        tag,
        digest: `sha256:${hex(32)}`,
        labels: {},
      },
      created_at: m.createdAt,
      updated_at: m.updatedAt,
      events: m.events.slice(0, 5),
      host_status: "ok",
    };
  }

  private volumeView(v: VolumeRecord): Record<string, unknown> {
    const view: Record<string, unknown> = {
      id: v.id,
      name: v.name,
      state: v.state,
      size_gb: v.sizeGb,
      region: v.region,
      zone: `${hex(2)}${v.region}`,
      encrypted: v.encrypted,
      fstype: "ext4",
      type: "local",
      host_status: "ok",
      auto_backup_enabled: true,
      snapshot_retention: 5,
      block_size: 4096,
      blocks: v.sizeGb * 262144,
      blocks_free: v.sizeGb * 262144,
      blocks_avail: v.sizeGb * 262144,
      bytes_total: v.sizeGb * 1073741824,
      bytes_used: 0,
      created_at: v.createdAt,
    };
    if (v.attachedMachineId) view.attached_machine_id = v.attachedMachineId;
    return view;
  }

  private leaseView(m: MachineRecord): Record<string, unknown> {
    const lease = m.lease;
    if (!lease) throw new HttpError(404, "lease not found");
    return {
      status: "success",
      data: {
        nonce: lease.nonce,
        expires_at: lease.expiresAt,
        owner: lease.owner,
        description: lease.description,
        version: m.instanceId,
      },
    };
  }

  private buildRoutes(): Route[] {
    const seg = "([^/]+)";
    const r = (method: string, path: string, operationId: string, handler: Route["handler"]): Route => ({
      method,
      pattern: new RegExp(`^${path.replaceAll("{}", seg)}$`),
      operationId,
      handler,
    });
    return [
      r("POST", "/apps", "Apps_create", ({ body }) => {
        const { name } = (body ?? {}) as { name?: string };
        if (!name) throw new HttpError(400, "app name is required");
        if (this.apps.has(name)) throw new HttpError(422, `app ${name} already exists`);
        this.createApp(name);
        return { status: 201 };
      }),
      r("GET", "/apps/{}", "Apps_show", ({ params }) => {
        const app = this.app(params[0]);
        return {
          status: 200,
          body: {
            id: app.id,
            name: app.name,
            status: "deployed",
            machine_count: this.machines(app.name).length,
            volume_count: this.volumes(app.name).length,
            organization: { name: "Emulated", slug: "personal" },
          },
        };
      }),
      r("GET", "/apps/{}/machines", "Machines_list", ({ params, query }) => {
        const app = this.app(params[0]);
        const includeDeleted = query.get("include_deleted") === "true";
        const region = query.get("region");
        const states = query.get("state")?.split(",");
        const filters = [...query.entries()]
          .filter(([k]) => k.startsWith("metadata."))
          .map(([k, v]) => [k.slice("metadata.".length), v] as const);
        const list = [...app.machines.values()].filter((m) => {
          if (!includeDeleted && m.state === "destroyed") return false;
          if (region && m.region !== region) return false;
          if (states && !states.includes(m.state)) return false;
          const meta = (m.config.metadata ?? {}) as Record<string, string>;
          return filters.every(([k, v]) => meta[k] === v);
        });
        return { status: 200, body: list.map((m) => this.machineView(app, m)) };
      }),
      r("POST", "/apps/{}/machines", "Machines_create", ({ params, body }) =>
        this.createMachine(params[0], body),
      ),
      r("GET", "/apps/{}/machines/{}", "Machines_show", ({ params }) => {
        const app = this.app(params[0]);
        return { status: 200, body: this.machineView(app, this.machine(app, params[1])) };
      }),
      r("DELETE", "/apps/{}/machines/{}", "Machines_delete", ({ params, query, headers }) => {
        const app = this.app(params[0]);
        const m = this.machine(app, params[1]);
        if (m.state === "destroyed") throw new HttpError(404, "machine not found");
        this.checkLease(m, headers);
        if (m.state === "destroying") return { status: 200, body: { ok: true } };
        const active = m.state === "started" || m.state === "starting";
        if (active && query.get("force") !== "true") {
          throw new HttpError(412, "failed_precondition: machine still active, refusing to delete");
        }
        this.setState(app, m, "destroying", "user");
        this.chain(app, m, [["destroyed", this.delays.destroyMs]]);
        return { status: 200, body: { ok: true } };
      }),
      r("POST", "/apps/{}/machines/{}/start", "Machines_start", ({ params, headers }) => {
        const app = this.app(params[0]);
        const m = this.machine(app, params[1]);
        this.checkLease(m, headers);
        const from = m.state;
        if (from !== "stopped" && from !== "suspended" && from !== "created") {
          throw new HttpError(
            412,
            `failed_precondition: unable to start machine from current state: '${from}'`,
          );
        }
        this.setState(app, m, "starting", "user");
        this.chain(app, m, [["started", from === "suspended" ? this.delays.resumeMs : this.delays.bootMs]]);
        return { status: 200, body: { previous_state: from, migrated: false, new_host: "" } };
      }),
      r("POST", "/apps/{}/machines/{}/stop", "Machines_stop", ({ params, headers }) => {
        const app = this.app(params[0]);
        const m = this.machine(app, params[1]);
        this.checkLease(m, headers);
        if (m.state !== "started" && m.state !== "starting" && m.state !== "suspended") {
          throw new HttpError(
            412,
            `failed_precondition: unable to stop machine from current state: '${m.state}'`,
          );
        }
        this.setState(app, m, "stopping", "user");
        this.chain(app, m, [["stopped", this.delays.stopMs]]);
        return { status: 200, body: { ok: true } };
      }),
      r("POST", "/apps/{}/machines/{}/suspend", "Machines_suspend", ({ params, headers }) => {
        const app = this.app(params[0]);
        const m = this.machine(app, params[1]);
        this.checkLease(m, headers);
        if (this.memoryMb(m) > this.suspendMaxMemoryMb) {
          throw new HttpError(
            400,
            `machine cannot be suspended: memory ${this.memoryMb(m)} MB exceeds ${this.suspendMaxMemoryMb} MB`,
          );
        }
        if (m.state !== "started") {
          throw new HttpError(
            412,
            `failed_precondition: unable to suspend machine from current state: '${m.state}'`,
          );
        }
        this.setState(app, m, "suspending", "user");
        this.chain(app, m, [["suspended", this.delays.suspendMs]]);
        return { status: 200, body: { ok: true } };
      }),
      r("POST", "/apps/{}/machines/{}/restart", "Machines_restart", ({ params, headers }) => {
        const app = this.app(params[0]);
        const m = this.machine(app, params[1]);
        this.checkLease(m, headers);
        if (m.state !== "started") {
          throw new HttpError(
            412,
            `failed_precondition: unable to restart machine from current state: '${m.state}'`,
          );
        }
        this.setState(app, m, "stopping", "user");
        this.chain(app, m, [
          ["starting", this.delays.stopMs],
          ["started", this.delays.bootMs],
        ]);
        return { status: 200, body: { ok: true } };
      }),
      r("GET", "/apps/{}/machines/{}/wait", "Machines_wait", ({ params, query }) => this.wait(params, query)),
      r("POST", "/apps/{}/machines/{}/lease", "Machines_create_lease", ({ params, headers, body }) => {
        const app = this.app(params[0]);
        const m = this.machine(app, params[1]);
        if (m.state === "destroyed") throw new HttpError(404, "machine not found");
        const { ttl = 30, description = "" } = (body ?? {}) as { ttl?: number; description?: string };
        const now = Date.now();
        const held = m.lease && m.lease.expiresAt * 1000 > now ? m.lease : null;
        const offered = headers["fly-machine-lease-nonce"];
        if (held && held.nonce !== offered) {
          throw new HttpError(
            409,
            `lease currently held by ${held.owner}, expires at ${new Date(held.expiresAt * 1000).toISOString()}`,
          );
        }
        const expiresAt = Math.floor(now / 1000) + ttl;
        m.lease = held
          ? { ...held, expiresAt }
          : { nonce: hex(6), owner: "emulator@example.com", description, expiresAt };
        return { status: 201, body: this.leaseView(m) };
      }),
      r("GET", "/apps/{}/machines/{}/lease", "Machines_show_lease", ({ params }) => {
        const app = this.app(params[0]);
        const m = this.machine(app, params[1]);
        if (m.lease && m.lease.expiresAt * 1000 <= Date.now()) m.lease = null;
        return { status: 200, body: this.leaseView(m) };
      }),
      r("DELETE", "/apps/{}/machines/{}/lease", "Machines_release_lease", ({ params, headers }) => {
        const app = this.app(params[0]);
        const m = this.machine(app, params[1]);
        const lease = m.lease;
        if (!lease || lease.expiresAt * 1000 <= Date.now()) throw new HttpError(404, "lease not found");
        if (headers["fly-machine-lease-nonce"] !== lease.nonce) {
          throw new HttpError(409, `lease currently held by ${lease.owner}; nonce does not match`);
        }
        m.lease = null;
        return { status: 200, body: { status: "success" } };
      }),
      r("GET", "/apps/{}/volumes", "Volumes_list", ({ params }) => {
        const app = this.app(params[0]);
        return { status: 200, body: this.volumes(app.name).map((v) => this.volumeView(v)) };
      }),
      r("POST", "/apps/{}/volumes", "Volumes_create", ({ params, body }) => {
        const app = this.app(params[0]);
        const req = (body ?? {}) as { name?: string; region?: string; size_gb?: number; encrypted?: boolean };
        if (!req.name || !/^[a-z0-9_]{1,30}$/.test(req.name)) {
          throw new HttpError(
            400,
            "volume name must be at most 30 characters of lowercase letters, numbers and underscores",
          );
        }
        if (!req.region) throw new HttpError(400, "region is required");
        if (!req.size_gb || req.size_gb < 1) throw new HttpError(400, "size_gb must be at least 1");
        if (this.noCapacity.get(req.region)?.volumes) {
          throw new HttpError(
            412,
            `insufficient resources to create new volume in region ${req.region}`,
            "insufficient_capacity",
          );
        }
        const v: VolumeRecord = {
          id: `vol_${hex(8)}`,
          name: req.name,
          region: req.region,
          sizeGb: req.size_gb,
          state: "created",
          attachedMachineId: null,
          createdAt: new Date().toISOString(),
          encrypted: req.encrypted ?? true,
        };
        app.volumes.set(v.id, v);
        return { status: 200, body: this.volumeView(v) };
      }),
      r("GET", "/apps/{}/volumes/{}", "Volumes_get_by_id", ({ params }) => {
        const app = this.app(params[0]);
        const v = params[1] ? app.volumes.get(params[1]) : undefined;
        if (!v || v.state === "destroyed") throw new HttpError(404, "volume not found");
        return { status: 200, body: this.volumeView(v) };
      }),
      r("DELETE", "/apps/{}/volumes/{}", "Volume_delete", ({ params }) => {
        const app = this.app(params[0]);
        const v = params[1] ? app.volumes.get(params[1]) : undefined;
        if (!v || v.state === "destroyed") throw new HttpError(404, "volume not found");
        if (v.attachedMachineId) {
          throw new HttpError(
            412,
            `failed_precondition: volume ${v.id} is attached to machine ${v.attachedMachineId}`,
          );
        }
        v.state = "destroyed";
        return { status: 200, body: this.volumeView(v) };
      }),
    ];
  }

  private createMachine(appName: string | undefined, body: unknown): Reply {
    const app = this.app(appName);
    const req = (body ?? {}) as {
      name?: string;
      region?: string;
      config?: Record<string, unknown>;
      skip_launch?: boolean;
    };
    const config = req.config;
    if (!config || typeof config.image !== "string" || config.image === "") {
      throw new HttpError(400, "invalid config: image is required");
    }
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
    if (this.noCapacity.get(region)?.machines) {
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
    return { status: 200, body: this.machineView(app, m) };
  }

  private async wait(params: string[], query: URLSearchParams): Promise<Reply> {
    const app = this.app(params[0]);
    const m = this.machine(app, params[1]);
    const wanted = (query.get("state") ?? "started").split(",");
    const timeoutRaw = query.get("timeout");
    const timeout = timeoutRaw === null ? 60 : Number(timeoutRaw);
    if (!Number.isInteger(timeout) || timeout < 1 || timeout > 60) {
      throw new HttpError(400, "invalid timeout: must be an integer number of seconds between 1 and 60");
    }
    const reached = () =>
      wanted.includes(m.state) || (wanted.includes("settled") && !TRANSIENT.includes(m.state));
    const done = (): Reply => ({
      status: 200,
      body: { ok: true, state: m.state, version: m.instanceId, event_id: m.events[0]?.id ?? "" },
    });
    if (reached()) return done();
    if (m.state === "destroyed") throw new HttpError(400, `machine ${m.id} is destroyed`);
    const limit = Math.min(timeout * 1000, this.waitCapMs);
    return await new Promise<Reply>((resolve, reject) => {
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
        if (reached()) finish(() => resolve(done()));
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
      }, limit);
      this.timers.add(timer);
      waiters.add(wake);
    });
  }
}

function defaultMessage(status: number): string {
  if (status === 429) return "rate limit exceeded";
  if (status === 502) return "bad gateway";
  if (status === 503) return "service unavailable";
  return "internal server error";
}

export async function startFlyEmulator(options: FlyEmulatorOptions = {}): Promise<FlyEmulator> {
  const emulator = new FlyEmulator(options);
  await emulator.start();
  return emulator;
}

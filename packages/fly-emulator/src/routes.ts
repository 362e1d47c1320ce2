import { type HandlerContext, HttpError, hex, type Reply } from "./http.ts";
import type { FlyState, MachineRecord, VolumeRecord } from "./state.ts";

export interface Route {
  method: string;
  pattern: RegExp;
  operationId: string;
  handler: (ctx: HandlerContext) => Promise<Reply> | Reply;
}

export interface RouteOptions {
  /** Longest a `/wait` call blocks, whatever its `timeout`. */
  waitCapMs: number;
  /** Largest memory a machine may have to be suspended. */
  suspendMaxMemoryMb: number;
}

/** The route serving `method path` (path without `/v1`), with its captured (still encoded) parameters. */
export function matchRoute(
  routes: Route[],
  method: string,
  path: string,
): { route: Route; params: string[] } | null {
  for (const route of routes) {
    if (route.method !== method) continue;
    const match = route.pattern.exec(path);
    if (match) return { route, params: match.slice(1) };
  }
  return null;
}

function memoryMb(m: MachineRecord): number {
  const guest = (m.config.guest ?? {}) as { memory_mb?: number };
  return guest.memory_mb ?? 256;
}

/** The Fly Machines API routes this emulator serves, each named by its OpenAPI operationId. */
export function buildRoutes(state: FlyState, options: RouteOptions): Route[] {
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
      if (state.hasApp(name)) throw new HttpError(422, `app ${name} already exists`);
      state.createApp(name);
      return { status: 201 };
    }),
    r("GET", "/apps/{}", "Apps_show", ({ params }) => {
      const app = state.app(params[0]);
      return {
        status: 200,
        body: {
          id: app.id,
          name: app.name,
          status: "deployed",
          machine_count: state.machines(app.name).length,
          volume_count: state.volumes(app.name).length,
          organization: { name: "Emulated", slug: "personal" },
        },
      };
    }),
    r("GET", "/apps/{}/machines", "Machines_list", ({ params, query }) => {
      const app = state.app(params[0]);
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
      return { status: 200, body: list.map((m) => machineView(m)) };
    }),
    r("POST", "/apps/{}/machines", "Machines_create", ({ params, body }) => {
      const app = state.app(params[0]);
      const m = state.createMachine(app, (body ?? {}) as Parameters<FlyState["createMachine"]>[1]);
      return { status: 200, body: machineView(m) };
    }),
    r("GET", "/apps/{}/machines/{}", "Machines_show", ({ params }) => {
      const app = state.app(params[0]);
      return { status: 200, body: machineView(state.machine(app, params[1])) };
    }),
    r("POST", "/apps/{}/machines/{}", "Machines_update", ({ params, body, headers }) => {
      const app = state.app(params[0]);
      const m = state.machine(app, params[1]);
      state.checkLease(m, headers);
      const req = (body ?? {}) as Parameters<FlyState["updateMachine"]>[2];
      return { status: 200, body: machineView(state.updateMachine(app, m, req)) };
    }),
    r("DELETE", "/apps/{}/machines/{}", "Machines_delete", ({ params, query, headers }) => {
      const app = state.app(params[0]);
      const m = state.machine(app, params[1]);
      if (m.state === "destroyed") throw new HttpError(404, "machine not found");
      state.checkLease(m, headers);
      if (m.state === "destroying") return { status: 200, body: { ok: true } };
      const active = m.state === "started" || m.state === "starting";
      if (active && query.get("force") !== "true") {
        throw new HttpError(412, "failed_precondition: machine still active, refusing to delete");
      }
      state.setState(app, m, "destroying", "user");
      state.chain(app, m, [["destroyed", state.delays.destroyMs]]);
      return { status: 200, body: { ok: true } };
    }),
    r("POST", "/apps/{}/machines/{}/start", "Machines_start", ({ params, headers }) => {
      const app = state.app(params[0]);
      const m = state.machine(app, params[1]);
      state.checkLease(m, headers);
      const from = m.state;
      if (from !== "stopped" && from !== "suspended" && from !== "created") {
        throw new HttpError(
          412,
          `failed_precondition: unable to start machine from current state: '${from}'`,
        );
      }
      state.setState(app, m, "starting", "user");
      state.chain(app, m, [["started", from === "suspended" ? state.delays.resumeMs : state.delays.bootMs]]);
      return { status: 200, body: { previous_state: from, migrated: false, new_host: "" } };
    }),
    r("POST", "/apps/{}/machines/{}/stop", "Machines_stop", ({ params, headers }) => {
      const app = state.app(params[0]);
      const m = state.machine(app, params[1]);
      state.checkLease(m, headers);
      if (m.state !== "started" && m.state !== "starting" && m.state !== "suspended") {
        throw new HttpError(
          412,
          `failed_precondition: unable to stop machine from current state: '${m.state}'`,
        );
      }
      state.setState(app, m, "stopping", "user");
      state.chain(app, m, [["stopped", state.delays.stopMs]]);
      return { status: 200, body: { ok: true } };
    }),
    r("POST", "/apps/{}/machines/{}/suspend", "Machines_suspend", ({ params, headers }) => {
      const app = state.app(params[0]);
      const m = state.machine(app, params[1]);
      state.checkLease(m, headers);
      if (memoryMb(m) > options.suspendMaxMemoryMb) {
        throw new HttpError(
          400,
          `machine cannot be suspended: memory ${memoryMb(m)} MB exceeds ${options.suspendMaxMemoryMb} MB`,
        );
      }
      if (m.state !== "started") {
        throw new HttpError(
          412,
          `failed_precondition: unable to suspend machine from current state: '${m.state}'`,
        );
      }
      state.setState(app, m, "suspending", "user");
      state.chain(app, m, [["suspended", state.delays.suspendMs]]);
      return { status: 200, body: { ok: true } };
    }),
    r("POST", "/apps/{}/machines/{}/restart", "Machines_restart", ({ params, headers }) => {
      const app = state.app(params[0]);
      const m = state.machine(app, params[1]);
      state.checkLease(m, headers);
      if (m.state !== "started") {
        throw new HttpError(
          412,
          `failed_precondition: unable to restart machine from current state: '${m.state}'`,
        );
      }
      state.setState(app, m, "stopping", "user");
      state.chain(app, m, [
        ["starting", state.delays.stopMs],
        ["started", state.delays.bootMs],
      ]);
      return { status: 200, body: { ok: true } };
    }),
    r("GET", "/apps/{}/machines/{}/wait", "Machines_wait", async ({ params, query }) => {
      const app = state.app(params[0]);
      const m = state.machine(app, params[1]);
      const wanted = (query.get("state") ?? "started").split(",");
      const timeoutRaw = query.get("timeout");
      const timeout = timeoutRaw === null ? 60 : Number(timeoutRaw);
      if (!Number.isInteger(timeout) || timeout < 1 || timeout > 60) {
        throw new HttpError(400, "invalid timeout: must be an integer number of seconds between 1 and 60");
      }
      await state.waitFor(m, wanted, Math.min(timeout * 1000, options.waitCapMs));
      return {
        status: 200,
        body: { ok: true, state: m.state, version: m.instanceId, event_id: m.events[0]?.id ?? "" },
      };
    }),
    r("POST", "/apps/{}/machines/{}/lease", "Machines_create_lease", ({ params, headers, body }) => {
      const app = state.app(params[0]);
      const m = state.machine(app, params[1]);
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
      state.lease(m, ttl, description);
      return { status: 201, body: leaseView(m) };
    }),
    r("GET", "/apps/{}/machines/{}/lease", "Machines_show_lease", ({ params }) => {
      const app = state.app(params[0]);
      const m = state.machine(app, params[1]);
      if (m.lease && m.lease.expiresAt * 1000 <= Date.now()) m.lease = null;
      return { status: 200, body: leaseView(m) };
    }),
    r("DELETE", "/apps/{}/machines/{}/lease", "Machines_release_lease", ({ params, headers }) => {
      const app = state.app(params[0]);
      const m = state.machine(app, params[1]);
      const lease = m.lease;
      if (!lease || lease.expiresAt * 1000 <= Date.now()) throw new HttpError(404, "lease not found");
      if (headers["fly-machine-lease-nonce"] !== lease.nonce) {
        throw new HttpError(409, `lease currently held by ${lease.owner}; nonce does not match`);
      }
      m.lease = null;
      return { status: 200, body: { status: "success" } };
    }),
    r("GET", "/apps/{}/volumes", "Volumes_list", ({ params }) => {
      const app = state.app(params[0]);
      return { status: 200, body: state.volumes(app.name).map((v) => volumeView(v)) };
    }),
    r("POST", "/apps/{}/volumes", "Volumes_create", ({ params, body }) => {
      const app = state.app(params[0]);
      const req = (body ?? {}) as { name?: string; region?: string; size_gb?: number; encrypted?: boolean };
      if (!req.name || !/^[a-z0-9_]{1,30}$/.test(req.name)) {
        throw new HttpError(
          400,
          "volume name must be at most 30 characters of lowercase letters, numbers and underscores",
        );
      }
      if (!req.region) throw new HttpError(400, "region is required");
      if (!req.size_gb || req.size_gb < 1) throw new HttpError(400, "size_gb must be at least 1");
      if (!state.hasCapacity(req.region, "volumes")) {
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
      return { status: 200, body: volumeView(v) };
    }),
    r("GET", "/apps/{}/volumes/{}", "Volumes_get_by_id", ({ params }) => {
      const app = state.app(params[0]);
      const v = params[1] ? app.volumes.get(params[1]) : undefined;
      if (!v || v.state === "destroyed") throw new HttpError(404, "volume not found");
      return { status: 200, body: volumeView(v) };
    }),
    r("DELETE", "/apps/{}/volumes/{}", "Volume_delete", ({ params }) => {
      const app = state.app(params[0]);
      const v = params[1] ? app.volumes.get(params[1]) : undefined;
      if (!v || v.state === "destroyed") throw new HttpError(404, "volume not found");
      if (v.attachedMachineId) {
        throw new HttpError(
          412,
          `failed_precondition: volume ${v.id} is attached to machine ${v.attachedMachineId}`,
        );
      }
      v.state = "destroyed";
      return { status: 200, body: volumeView(v) };
    }),
  ];
}

export function machineView(m: MachineRecord): Record<string, unknown> {
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

export function volumeView(v: VolumeRecord): Record<string, unknown> {
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

export function leaseView(m: MachineRecord): Record<string, unknown> {
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

/**
 * Test wiring for the controlplane backend: a small stateful emulator of the control plane's tenant routes on
 * 127.0.0.1 (real HTTP, signatures checked with contracts' `signatureMatches`, nonces remembered, idempotency keys
 * honoured, operations that run and finish), with fault injection (status answers such as 500 or 429 with
 * Retry-After, dropped connections, slow answers, failed operations). It stands in for apps/control-plane in unit
 * tests of provisioner-core, which must not depend on apps/. Kept out of the package's exports; tests import it by
 * path.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  BootEventBody,
  CP_HEADERS,
  type CpOperationKind,
  type CpOperationView,
  CpProvisionBody,
  CpStartBody,
  type CpWorkspaceSpec,
  type TenantRuntimeConfig,
} from "@molecule/contracts";
import { sha256Hex, signatureMatches, withinSignatureWindow } from "@molecule/identity/signing";
import type { WorkspaceSpec } from "../provisioner.ts";
import { abortableSleep, IDEMPOTENCY_KEY_HEADER } from "./client.ts";
import { type ControlPlaneProvisionerOptions, createControlPlaneProvisioner } from "./provisioner.ts";

export const TEST_TENANT_TOKEN = "cpt_test_tenant_credential_0123456789";
export const TEST_SIGNING_KEY = "test-org-signing-key-0123456789abcdef";
export const TEST_ORG_ID = "org_01jcptest000000000000000000";

/** The address the emulated workspace backend assigns each generation of a workspace's process. */
export function emulatedAgentUrl(workspaceId: string, generation: number): string {
  return `http://g${generation}-${workspaceId.replace("_", "-")}.agents.internal:8000`;
}

export type CpFault =
  /** Answer this status with the error envelope (and Retry-After when given) without doing anything. */
  | { kind: "status"; status: number; code?: string; retryAfter?: string }
  /** Close the connection without answering. `afterApply`: do the work first, then drop the answer. */
  | { kind: "drop"; afterApply?: boolean }
  /** Wait this long, then handle the request normally (the client may have given up by then). */
  | { kind: "delay"; ms: number };

export interface CpRequestRecord {
  method: string;
  path: string;
  timestamp: string | undefined;
  nonce: string | undefined;
  signature: string | undefined;
  idempotencyKey: string | undefined;
  authorized: boolean;
  /** The answer's status, or "dropped". */
  outcome: number | "dropped";
}

export interface CpEmulatorOptions {
  token?: string;
  signingKey?: string;
  orgId?: string;
  /** Whether the emulated workspace backend can suspend (default true). */
  suspend?: boolean;
  /** How long each phase of an operation takes (pending → running → finished), default 2 ms. */
  operationPhaseMs?: number;
}

interface EmulatedWorkspace {
  spec: CpWorkspaceSpec;
  state: "running" | "stopped" | "suspended";
  /** Bumped when a start rebuilds the process from the spec. */
  generation: number;
}

interface OperationFault {
  code: string;
  message: string;
  retryable: boolean;
  /** provision only: the workspace's resources are made (stopped) before the failure, as a crash part-way would. */
  partway?: boolean;
}

interface Injected {
  method?: string;
  path?: string | RegExp;
  fault: CpFault;
  times: number;
}

export interface CpEmulator {
  url: string;
  orgId: string;
  /** Every request received, in order, with its auth headers and what it was answered. */
  requests: CpRequestRecord[];
  bootEvents: BootEventBody[];
  /** What GET /cp/tenants/config answers; tests may change it. */
  tenantConfig: TenantRuntimeConfig;
  /** The next `times` requests matching method/path meet `fault` instead of (or before) normal handling. */
  inject(match: { method?: string; path?: string | RegExp }, fault: CpFault, times?: number): void;
  /** The next operation of `kind` fails with this error (after reporting its first step). */
  failNextOperation(kind: CpOperationKind, error: OperationFault): void;
  /**
   * Operations accepted from now on stay `pending` until the returned function is called, so a test decides how
   * many polls an operation takes, whatever the clock says.
   */
  holdOperations(): () => void;
  workspace(workspaceId: string): { spec: CpWorkspaceSpec; state: string; generation: number } | undefined;
  operation(operationId: string): CpOperationView | undefined;
  /** How many operations were created (distinct idempotency keys). */
  operationCount(): number;
  close(): Promise<void>;
}

function envelope(res: ServerResponse, status: number, code: string, message: string, extra = {}): void {
  res.writeHead(status, { "content-type": "application/json", ...extra });
  res.end(JSON.stringify({ error: { code, message, request_id: `req_${randomUUID()}` } }));
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function startControlPlaneEmulator(options: CpEmulatorOptions = {}): Promise<CpEmulator> {
  const token = options.token ?? TEST_TENANT_TOKEN;
  const signingKey = options.signingKey ?? TEST_SIGNING_KEY;
  const orgId = options.orgId ?? TEST_ORG_ID;
  const canSuspend = options.suspend ?? true;
  const phaseMs = options.operationPhaseMs ?? 2;

  const requests: CpRequestRecord[] = [];
  const bootEvents: BootEventBody[] = [];
  const seenNonces = new Map<string, number>();
  const workspaces = new Map<string, EmulatedWorkspace>();
  const operations = new Map<string, CpOperationView>();
  /** The spec each provision operation was asked for. */
  const specs = new Map<string, CpWorkspaceSpec>();
  const byKey = new Map<string, { fingerprint: string; operationId: string }>();
  const chains = new Map<string, Promise<void>>();
  const injected: Injected[] = [];
  const operationFaults = new Map<CpOperationKind, OperationFault>();
  const timers = new Set<NodeJS.Timeout>();
  let opCounter = 0;
  let hold: { gate: Promise<void>; release: () => void } | null = null;

  const tenantConfig: TenantRuntimeConfig = {
    org_id: orgId,
    slug: "emulated-org",
    workspace_backend: "fake",
    capabilities: canSuspend ? { suspend: true, suspendMaxMemoryMb: 2048 } : { suspend: false },
    settings: {},
  };

  function wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        resolve();
      }, ms);
      timers.add(timer);
    });
  }

  function takeFault(method: string, path: string): CpFault | undefined {
    const index = injected.findIndex(
      (entry) =>
        (!entry.method || entry.method === method) &&
        (!entry.path || (typeof entry.path === "string" ? entry.path === path : entry.path.test(path))),
    );
    if (index < 0) return undefined;
    const entry = injected[index] as Injected;
    entry.times -= 1;
    if (entry.times <= 0) injected.splice(index, 1);
    return entry.fault;
  }

  /** Runs the operation's work after the workspace's earlier operations, in two observable phases. */
  function run(
    operation: CpOperationView,
    work: () => { steps: string[]; result?: CpOperationView["result"] },
  ) {
    const previous = chains.get(operation.workspace_id) ?? Promise.resolve();
    const gate = hold?.gate;
    const next = previous.then(async () => {
      await gate;
      await wait(phaseMs);
      operation.status = "running";
      const fault = operationFaults.get(operation.kind);
      if (fault) {
        operationFaults.delete(operation.kind);
        operation.steps.push({ name: "accepted", duration_ms: 1 });
        if (fault.partway && operation.kind === "provision" && !workspaces.has(operation.workspace_id)) {
          const spec = specs.get(operation.id);
          if (spec) workspaces.set(operation.workspace_id, { spec, state: "stopped", generation: 1 });
          operation.steps.push({ name: "volume_ready", duration_ms: 1 });
        }
        await wait(phaseMs);
        operation.status = "failed";
        operation.error = { code: fault.code, message: fault.message, retryable: fault.retryable };
        operation.finished_at = new Date().toISOString();
        return;
      }
      await wait(phaseMs);
      const outcome = work();
      for (const name of outcome.steps) operation.steps.push({ name, duration_ms: 1 });
      operation.result = outcome.result ?? null;
      operation.status = "succeeded";
      operation.finished_at = new Date().toISOString();
    });
    chains.set(operation.workspace_id, next);
  }

  function operationFor(
    kind: CpOperationKind,
    workspaceId: string,
    key: string,
    fingerprint: string,
    work: () => { steps: string[]; result?: CpOperationView["result"] },
  ): CpOperationView | "reused" {
    const known = byKey.get(key);
    if (known) {
      if (known.fingerprint !== fingerprint) return "reused";
      return operations.get(known.operationId) as CpOperationView;
    }
    opCounter += 1;
    const operation: CpOperationView = {
      id: `cpop_${String(opCounter).padStart(6, "0")}`,
      workspace_id: workspaceId,
      kind,
      status: "pending",
      steps: [],
      result: null,
      error: null,
      created_at: new Date().toISOString(),
      finished_at: null,
    };
    operations.set(operation.id, operation);
    byKey.set(key, { fingerprint, operationId: operation.id });
    run(operation, work);
    return operation;
  }

  function provisionWork(spec: CpWorkspaceSpec, kind: "provision" | "start", recreate: boolean) {
    return () => {
      const existing = workspaces.get(spec.workspace_id);
      if (!existing) {
        workspaces.set(spec.workspace_id, { spec, state: "running", generation: 1 });
        return {
          steps: ["volume_ready", "instance_created", "instance_started"],
          result: { agent_url: emulatedAgentUrl(spec.workspace_id, 1) },
        };
      }
      if (kind === "start" && recreate) {
        existing.spec = spec;
        existing.generation += 1;
        existing.state = "running";
        return {
          steps: ["instance_recreated", "instance_started"],
          result: { agent_url: emulatedAgentUrl(spec.workspace_id, existing.generation) },
        };
      }
      const wasRunning = existing.state === "running";
      existing.state = "running";
      return {
        steps: [wasRunning ? "already_running" : "instance_started"],
        result: { agent_url: emulatedAgentUrl(spec.workspace_id, existing.generation) },
      };
    };
  }

  async function handle(req: IncomingMessage, res: ServerResponse, raw: Buffer, record: CpRequestRecord) {
    const method = record.method;
    const url = new URL(record.path, "http://emulator");
    const route = url.pathname;

    // authentication: bearer, fresh timestamp, unseen nonce, valid signature over the exact bytes
    const bearer = header(req, "authorization");
    const now = Math.floor(Date.now() / 1000);
    const ts = Number(record.timestamp);
    const signedOk =
      bearer === `Bearer ${token}` &&
      record.timestamp !== undefined &&
      Number.isFinite(ts) &&
      withinSignatureWindow(ts, Date.now()) &&
      record.nonce !== undefined &&
      record.signature !== undefined &&
      signatureMatches(signingKey, record.signature, {
        method,
        path: record.path,
        timestamp: record.timestamp,
        nonce: record.nonce,
        body: raw,
      });
    if (!signedOk)
      return envelope(res, 401, "unauthorized", "missing or invalid tenant credential or signature");
    if (seenNonces.has(record.nonce as string)) return envelope(res, 401, "unauthorized", "replayed request");
    seenNonces.set(record.nonce as string, now);
    record.authorized = true;

    let body: unknown = {};
    if (raw.length > 0) {
      try {
        body = JSON.parse(raw.toString("utf8"));
      } catch {
        return envelope(res, 400, "bad_request", "body is not JSON");
      }
    }

    const mutating = method === "POST" || method === "DELETE";
    const key = record.idempotencyKey;
    if (mutating && !key) return envelope(res, 400, "bad_request", "Idempotency-Key header is required");
    const fingerprint = `${method} ${route} ${sha256Hex(raw)}`;

    const accept = (operation: CpOperationView | "reused") =>
      operation === "reused"
        ? envelope(
            res,
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
          )
        : json(res, 202, { operation });

    if (method === "GET" && route === "/cp/tenants/config") return json(res, 200, tenantConfig);
    if (method === "POST" && route === "/cp/tenants/boot-event") {
      const parsed = BootEventBody.safeParse(body);
      if (!parsed.success) return envelope(res, 400, "bad_request", "invalid boot event");
      bootEvents.push(parsed.data);
      res.writeHead(204).end();
      return;
    }
    if (method === "GET" && route === "/cp/workspaces") {
      return json(res, 200, {
        workspaces: [...workspaces.entries()].map(([id, w]) => ({ workspace_id: id, state: w.state })),
      });
    }
    const opMatch = /^\/cp\/operations\/([^/]+)$/.exec(route);
    if (method === "GET" && opMatch) {
      const operation = operations.get(decodeURIComponent(opMatch[1] as string));
      return operation ? json(res, 200, operation) : envelope(res, 404, "not_found", "no such operation");
    }
    if (method === "POST" && route === "/cp/workspaces/provision") {
      const parsed = CpProvisionBody.safeParse(body);
      if (!parsed.success) return envelope(res, 400, "bad_request", "invalid workspace spec");
      const spec = parsed.data;
      const operation = operationFor(
        "provision",
        spec.workspace_id,
        key as string,
        fingerprint,
        provisionWork(spec, "provision", false),
      );
      if (operation !== "reused") specs.set(operation.id, spec);
      return accept(operation);
    }
    const wsMatch = /^\/cp\/workspaces\/([^/]+)(?:\/(start|stop|suspend|status))?$/.exec(route);
    if (!wsMatch) return envelope(res, 404, "not_found", "no such route");
    const workspaceId = decodeURIComponent(wsMatch[1] as string);
    const action = wsMatch[2];
    const existing = workspaces.get(workspaceId);
    if (method === "GET" && action === "status") {
      return existing
        ? json(res, 200, { state: existing.state })
        : envelope(res, 404, "not_found", "no such workspace");
    }
    if (method === "POST" && action === "start") {
      const parsed = CpStartBody.safeParse(body);
      if (!parsed.success || parsed.data.spec.workspace_id !== workspaceId) {
        return envelope(res, 400, "bad_request", "invalid start body");
      }
      return accept(
        operationFor(
          "start",
          workspaceId,
          key as string,
          fingerprint,
          provisionWork(parsed.data.spec, "start", parsed.data.recreate),
        ),
      );
    }
    if (method === "POST" && (action === "stop" || action === "suspend")) {
      if (!existing && !byKey.has(key as string)) return envelope(res, 404, "not_found", "no such workspace");
      return accept(
        operationFor(action, workspaceId, key as string, fingerprint, () => {
          const w = workspaces.get(workspaceId);
          if (!w) return { steps: ["already_gone"] };
          if (action === "suspend" && canSuspend) {
            w.state = "suspended";
            return { steps: ["instance_suspended"], result: { suspended: true } };
          }
          w.state = "stopped";
          return action === "suspend"
            ? {
                steps: ["instance_stopped"],
                result: { suspended: false, reason: "the workspace backend cannot suspend; stopped instead" },
              }
            : { steps: ["instance_stopped"] };
        }),
      );
    }
    if (method === "DELETE" && !action) {
      return accept(
        operationFor("destroy", workspaceId, key as string, fingerprint, () => {
          const had = workspaces.delete(workspaceId);
          return { steps: [had ? "instance_destroyed" : "already_gone"] };
        }),
      );
    }
    return envelope(res, 405, "bad_request", "method not allowed");
  }

  const server: Server = createServer((req, res) => {
    void (async () => {
      const raw = await readBody(req);
      const record: CpRequestRecord = {
        method: req.method ?? "GET",
        path: req.url ?? "/",
        timestamp: header(req, CP_HEADERS.timestamp),
        nonce: header(req, CP_HEADERS.nonce),
        signature: header(req, CP_HEADERS.signature),
        idempotencyKey: header(req, IDEMPOTENCY_KEY_HEADER),
        authorized: false,
        outcome: 0,
      };
      requests.push(record);
      const fault = takeFault(record.method, new URL(record.path, "http://emulator").pathname);
      if (fault?.kind === "status") {
        record.outcome = fault.status;
        return envelope(
          res,
          fault.status,
          fault.code ??
            (fault.status === 429 ? "rate_limited" : fault.status >= 500 ? "internal" : "bad_request"),
          `injected HTTP ${fault.status}`,
          fault.retryAfter ? { "retry-after": fault.retryAfter } : {},
        );
      }
      if (fault?.kind === "drop" && !fault.afterApply) {
        record.outcome = "dropped";
        req.socket.destroy();
        return;
      }
      if (fault?.kind === "delay") await wait(fault.ms);
      if (fault?.kind === "drop") {
        // do the work, then lose the answer: the client must retry with the same Idempotency-Key
        const sink = Object.create(res) as ServerResponse;
        sink.writeHead = (() => sink) as unknown as ServerResponse["writeHead"];
        sink.end = (() => sink) as unknown as ServerResponse["end"];
        await handle(req, sink, raw, record);
        record.outcome = "dropped";
        req.socket.destroy();
        return;
      }
      res.on("finish", () => {
        record.outcome = res.statusCode;
      });
      await handle(req, res, raw, record);
    })().catch((error: unknown) => {
      if (!res.headersSent) envelope(res, 500, "internal", `emulator error: ${(error as Error).message}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    orgId,
    requests,
    bootEvents,
    tenantConfig,
    inject(match, fault, times = 1) {
      injected.push({ ...match, fault, times });
    },
    failNextOperation(kind, error) {
      operationFaults.set(kind, error);
    },
    holdOperations() {
      let release = () => {};
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      const current = { gate, release };
      hold = current;
      return () => {
        if (hold === current) hold = null;
        current.release();
      };
    },
    workspace(workspaceId) {
      const w = workspaces.get(workspaceId);
      return w ? { spec: structuredClone(w.spec), state: w.state, generation: w.generation } : undefined;
    },
    operation(operationId) {
      const operation = operations.get(operationId);
      return operation ? structuredClone(operation) : undefined;
    },
    operationCount: () => operations.size,
    async close() {
      hold?.release();
      for (const timer of timers) clearTimeout(timer);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface ControlPlaneHarness {
  emulator: CpEmulator;
  provisioner: ReturnType<typeof createControlPlaneProvisioner>;
  /** Delays the backend asked for between retries and polls (each then shortened to at most 5 ms). */
  sleeps: number[];
  makeSpec(overrides?: Partial<WorkspaceSpec>): WorkspaceSpec;
  close(): Promise<void>;
}

let seq = 0;

/**
 * The emulator plus a controlplane provisioner pointed at it, with short retries; every wait it asks for (retry or
 * poll) is recorded in `sleeps` and shortened to at most 5 ms.
 */
export async function startControlPlaneHarness(
  options: { emulator?: CpEmulatorOptions; provisioner?: Partial<ControlPlaneProvisionerOptions> } = {},
): Promise<ControlPlaneHarness> {
  const emulator = await startControlPlaneEmulator(options.emulator);
  const sleeps: number[] = [];
  const provisioner = createControlPlaneProvisioner({
    baseUrl: emulator.url,
    tenantToken: options.emulator?.token ?? TEST_TENANT_TOKEN,
    signingKey: options.emulator?.signingKey ?? TEST_SIGNING_KEY,
    orgId: emulator.orgId,
    capabilities: emulator.tenantConfig.capabilities,
    requestTimeoutMs: 2_000,
    retry: { maxAttempts: 5, baseDelayMs: 2, maxDelayMs: 20, maxElapsedMs: 10_000 },
    sleep: (ms, signal) => {
      sleeps.push(ms);
      return abortableSleep(Math.min(ms, 5), signal);
    },
    ...options.provisioner,
  });
  return {
    emulator,
    provisioner,
    sleeps,
    makeSpec(overrides = {}) {
      seq += 1;
      const workspaceId = overrides.workspaceId ?? `ws_01jcptest00000000000${String(seq).padStart(6, "0")}`;
      return {
        workspaceId,
        deployment: "test-deployment",
        runtime: "echo",
        tier: 2,
        env: { WORKSPACE_ID: workspaceId, WORKSPACE_BOOT_TOKEN: "boot-secret-value" },
        secretKeys: ["WORKSPACE_BOOT_TOKEN"],
        metadata: {},
        ...overrides,
        // the tenant credential decides the org; the spec follows it
        orgId: emulator.orgId,
      };
    },
    close: () => emulator.close(),
  };
}

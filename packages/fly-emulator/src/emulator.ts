import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  type Fault,
  FaultPlan,
  type FaultRequest,
  faultError,
  type RateLimit,
  RateLimiter,
} from "./faults.ts";
import { HttpError, hex, type Reply } from "./http.ts";
import type { OpenApiValidator } from "./openapi.ts";
import { buildRoutes, matchRoute, type Route } from "./routes.ts";
import {
  type AppRecord,
  DEFAULT_DELAYS,
  FlyState,
  type MachineRecord,
  type TransitionDelays,
  type VolumeRecord,
} from "./state.ts";

/**
 * A stateful, in-process stand-in for the subset of the Fly Machines API that the flyio backend uses.
 * Machines and volumes follow Fly's state machine with small, configurable transition delays (`state.ts`); leases,
 * the `/wait` endpoint, error envelopes and status codes behave as Fly documents them (`routes.ts`); faults and rate
 * limits are injected per test (`faults.ts`). This module is the HTTP server and the test controls. Every exchange is
 * checked against the official OpenAPI document when a validator is given.
 */

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

export class FlyEmulator {
  readonly token: string;
  readonly delays: TransitionDelays;
  readonly waitCapMs: number;
  readonly suspendMaxMemoryMb: number;
  readonly violations: string[] = [];
  readonly log: ExchangeLog[] = [];
  private readonly state: FlyState;
  private readonly faults = new FaultPlan();
  private readonly rateLimiter: RateLimiter;
  private readonly counts = new Map<string, number>();
  private readonly routes: Route[];
  private readonly validator: OpenApiValidator | null;
  private server: Server | null = null;
  private baseUrl = "";
  private requestSeq = 0;

  constructor(options: FlyEmulatorOptions = {}) {
    this.token = options.token ?? "fly-emulator-token";
    this.delays = { ...DEFAULT_DELAYS, ...options.delays };
    this.waitCapMs = options.waitCapMs ?? 60_000;
    this.suspendMaxMemoryMb = options.suspendMaxMemoryMb ?? 2048;
    this.validator = options.validator ?? null;
    this.rateLimiter = new RateLimiter(options.rateLimit);
    this.state = new FlyState(this.delays);
    for (const name of options.apps ?? []) this.createApp(name);
    this.routes = buildRoutes(this.state, {
      waitCapMs: this.waitCapMs,
      suspendMaxMemoryMb: this.suspendMaxMemoryMb,
    });
  }

  /** Starts listening on 127.0.0.1 at a free port; returns the base URL (without `/v1`). */
  async start(): Promise<string> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => this.failed(res, error));
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
    this.state.close();
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    this.server = null;
  }

  // ---- test controls -------------------------------------------------------------------------------------------

  createApp(name: string): AppRecord {
    return this.state.createApp(name);
  }

  inject(fault: Fault): void {
    this.faults.inject(fault);
  }

  /** Armed faults not yet consumed by a matching request. */
  pendingFaults(): number {
    return this.faults.pending();
  }

  clearFaults(): void {
    this.faults.clear();
  }

  /** Makes machine (and optionally volume) creates in `region` answer `insufficient_capacity`. */
  setCapacity(region: string, available: boolean, scope: { volumes?: boolean } = {}): void {
    this.state.setCapacity(region, available, scope);
  }

  /** Live (not destroyed) machines of an app. */
  machines(app: string): MachineRecord[] {
    return this.state.machines(app);
  }

  /** Live (not destroyed) volumes of an app. */
  volumes(app: string): VolumeRecord[] {
    return this.state.volumes(app);
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
    const matched = matchRoute(this.routes, method, path);
    const operationId = matched?.route.operationId ?? "unknown";
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
      if (!url.pathname.startsWith("/v1/") || !matched) throw new HttpError(404, "404 page not found");
      if (req.headers.authorization !== `Bearer ${this.token}`) {
        throw new HttpError(401, "You must be authenticated to view this.");
      }
      const params = matched.params.map(decodePathParam);
      const faultRequest: FaultRequest = {
        operationId,
        method,
        path,
        params: {},
        query: url.searchParams,
        body,
      };
      const fault = this.faults.take(faultRequest);
      if (fault?.kind === "slow") await this.state.delay(fault.delayMs);
      if (fault?.kind === "drop-before") {
        this.log.push({ operationId, method, path, status: "dropped" });
        req.socket.destroy();
        return;
      }
      if (fault?.kind === "status") throw faultError(fault, faultRequest);
      this.rateLimiter.check(operationId, params);
      reply = await matched.route.handler({ params, query: url.searchParams, headers: req.headers, body });
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
    if (this.validator && url.pathname.startsWith("/v1/") && matched) {
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

  /** An emulator bug answers 500 and is recorded as a violation, so the test that met it fails saying so. */
  private failed(res: ServerResponse, error: unknown): void {
    this.violations.push(`emulator error: ${(error as Error).message}`);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(500, { "content-type": "application/json; charset=utf-8" });
    res.end(JSON.stringify({ error: "internal emulator error" }));
  }
}

/** Go's router answers a malformed escape in the path with 400; so does the emulator, naming no part of it. */
function decodePathParam(param: string): string {
  try {
    return decodeURIComponent(param);
  } catch {
    throw new HttpError(400, "invalid URL escape in the path");
  }
}

export async function startFlyEmulator(options: FlyEmulatorOptions = {}): Promise<FlyEmulator> {
  const emulator = new FlyEmulator(options);
  await emulator.start();
  return emulator;
}

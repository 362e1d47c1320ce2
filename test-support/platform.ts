import { Writable } from "node:stream";
import { type ServerType, serve } from "@hono/node-server";
import { A2AProxyError, createIdGenerator, ErrorEnvelope } from "@molecule/contracts";
import { Sealer } from "@molecule/identity";
import type { Provisioner } from "@molecule/provisioner-core";
import { ChangeFeed } from "@molecule/service-kit/cluster";
import { frontDoorServer } from "@molecule/service-kit/http";
import { ServiceMetrics } from "@molecule/service-kit/metrics";
import { createPlatform, tenantOpenApi } from "@molecule/tenant-platform";
import type { ActivityTracker } from "@molecule/tenant-platform/activity";
import type { TenantBackups } from "@molecule/tenant-platform/backups";
import type { Clock, PlatformDeps, PlatformSettings } from "@molecule/tenant-platform/deps";
import { HeartbeatBatcher, heartbeatFlushIntervalMs } from "@molecule/tenant-platform/heartbeats";
import type { IdleSuspender } from "@molecule/tenant-platform/idle";
import { LivenessSweeper } from "@molecule/tenant-platform/liveness";
import { OperationRunner } from "@molecule/tenant-platform/operations";
import { PoolFiller } from "@molecule/tenant-platform/pools";
import pino from "pino";
import { EventBus } from "../apps/tenant-platform/src/services/events.ts";
import { AnswerChecker } from "./openapi.ts";
import { createTestDatabase, type TestDatabase } from "./pg.ts";

export const ADMIN_TOKEN = "test-admin-token-0123456789abcdef";
export const SECRETS_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/** A clock tests can move forward. */
export class TestClock implements Clock {
  private offsetMs = 0;
  private frozenAt: number | null = null;
  now(): Date {
    return new Date((this.frozenAt ?? Date.now()) + this.offsetMs);
  }
  /** Stops the clock where it is: from then on only `advance` moves it, so no real time leaks into what a test counts. */
  freeze(): void {
    this.frozenAt ??= Date.now();
  }
  advance(ms: number): void {
    this.offsetMs += ms;
  }
}

/** A response as tests read it: the JSON body is checked field by field, so it is left untyped. */
export interface TestResponse {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: tests read response bodies field by field
  body: any;
  headers: Headers;
}

/**
 * The error a response carries, checked against its schema: the service's envelope, or the JSON-RPC error object the
 * A2A proxy answers with (its stable code and request id are in `error.data`).
 */
export function errorOf(response: TestResponse): { code: string; message: string; requestId: string } {
  const proxied = A2AProxyError.safeParse(response.body);
  if (proxied.success) {
    const { message, data } = proxied.data.error;
    return { code: data.code, message, requestId: data.request_id };
  }
  return ErrorEnvelope.parse(response.body).error;
}

export interface TestPlatform {
  app: ReturnType<typeof createPlatform>["app"];
  /** The raw routes `listen()` serves in front of the app. */
  rawRoutes: ReturnType<typeof createPlatform>["rawRoutes"];
  deps: PlatformDeps;
  database: TestDatabase;
  runner: OperationRunner;
  sweeper: LivenessSweeper;
  /** Keeps the warm pools at their targets: rounds on demand with `fill()`, and on its own once `listen()` ran. */
  pools: PoolFiller;
  /**
   * Steady-state heartbeats, buffered: written by `heartbeats.flush()` (or the sweep's `markStale`), and by its timer
   * once `listen()` has started the loops.
   */
  heartbeats: HeartbeatBatcher;
  /** A2A messages and reported activity, buffered: written by `activity.flush()` or an idle sweep. */
  activity: ActivityTracker;
  /** The idle sweep: `idle.sweep()` runs one round (its loop runs only when `listen()` is given an interval). */
  idle: IdleSuspender;
  clock: TestClock;
  /** Every log line the platform wrote, for checking that no secret leaks into logs. */
  logs: string[];
  call(
    method: string,
    path: string,
    options?: { token?: string | null; body?: unknown; headers?: Record<string, string> },
  ): Promise<TestResponse>;
  /** As `call`, over real HTTP to the served platform (after `listen()`): the raw routes answer what they serve. */
  callServed(
    method: string,
    path: string,
    options?: { token?: string | null; body?: unknown; headers?: Record<string, string> },
  ): Promise<TestResponse>;
  /**
   * Serves the app on 127.0.0.1 (a free port) with the raw routes in front, as `main()` does, points PLATFORM_URL at
   * it and starts the loops.
   */
  listen(): Promise<string>;
  /** Ends every open connection to the served platform at once (event streams too), as a proxy dropping them would. */
  dropConnections(): void;
  close(): Promise<void>;
}

let answers: AnswerChecker | undefined;

/**
 * One test request, with the admin token unless another (or null) is given, the body sent as JSON. Its answer, when
 * JSON, must match the schema the platform's OpenAPI document gives for its route and status, or the call throws.
 */
async function testCall(
  send: (init: RequestInit) => Response | Promise<Response>,
  method: string,
  path: string,
  options: { token?: string | null; body?: unknown; headers?: Record<string, string> },
): Promise<TestResponse> {
  const headers: Record<string, string> = { ...options.headers };
  const token = options.token === undefined ? ADMIN_TOKEN : options.token;
  if (token) headers.authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
    headers["content-type"] ??= "application/json";
  }
  const response = await send({ method, headers, body });
  const text = await response.text();
  const answer = text ? JSON.parse(text) : null;
  answers ??= new AnswerChecker(tenantOpenApi());
  answers.check(method, path, response.status, response.headers.get("content-type"), answer);
  return { status: response.status, body: answer, headers: response.headers };
}

/** The tenant platform in process, on a fresh real PostgreSQL database, with the given backend. */
export async function createTestPlatform(
  provisioner: Provisioner,
  settings: Partial<PlatformSettings> = {},
  options: {
    sweepIntervalMs?: number;
    /** Runs the idle sweep on this interval once `listen()` has started the loops (default: only by hand). */
    idleSweepIntervalMs?: number;
    resolveAgentHost?: PlatformDeps["resolveAgentHost"];
    /** The key ring (default: `SECRETS_KEY` as version 1). */
    sealer?: Sealer;
    /**
     * Another platform's database, to start a second process on the same data (a restart). It stays open when this
     * platform closes: its owner drops it.
     */
    database?: TestDatabase;
    /**
     * Without the change feed (`false`), nothing is answered from memory: every heartbeat is written at once, and the
     * A2A proxy reads callers and targets from the database on every call. By
     * default the platform listens to its database's change notifications as `main()` does.
     */
    changeFeed?: boolean;
    /** How often the runner looks for operations nobody woke it for (default 100 ms). */
    runnerPollMs?: number;
    /** The runner's instance id (default "test-runner"): replicas on one database need their own. */
    runnerId?: string;
    /** Database backups, for the backup routes (built with `buildTenantBackups` over this platform's deps). */
    backups?: (deps: PlatformDeps, database: TestDatabase) => TenantBackups | null;
  } = {},
): Promise<TestPlatform> {
  const database = options.database ?? (await createTestDatabase());
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      logs.push(String(chunk));
      done();
    },
  });
  const clock = new TestClock();
  const deps: PlatformDeps = {
    db: database.db,
    advisoryLock: database.withAdvisoryLock,
    provisioner,
    sealer: options.sealer ?? Sealer.fromConfig(SECRETS_KEY, 1, ""),
    clock,
    ids: createIdGenerator(),
    logger: pino({ level: "debug" }, sink),
    events: new EventBus(),
    metrics: new ServiceMetrics(),
    ...(options.resolveAgentHost ? { resolveAgentHost: options.resolveAgentHost } : {}),
    settings: {
      orgId: "org_test",
      deployment: "test",
      adminToken: ADMIN_TOKEN,
      publicUrl: "http://127.0.0.1:9",
      allowedRuntimes: ["echo", "doesnotexist"],
      maxBodyBytes: 64 * 1024,
      a2aTimeoutMs: 10_000,
      a2aMaxRequestBytes: 1024 * 1024,
      a2aMaxResponseBytes: 4 * 1024 * 1024,
      // Test agents listen on 127.0.0.1 over plain HTTP, as Docker-run workspaces do.
      allowInsecureAgentUrls: true,
      allowPrivateAgentUrls: true,
      staleAfterMs: 90_000,
      operationLeaseMs: 5_000,
      operationMaxAttempts: 3,
      workspaceEnv: {},
      reconcile: { intervalMs: 30 * 60_000, deleteOrphans: false, orphanGraceMs: 60 * 60_000 },
      ...settings,
    },
  };
  const changes = options.changeFeed === false ? null : await ChangeFeed.start(database);
  const runner = new OperationRunner(
    deps,
    options.runnerId ?? "test-runner",
    options.runnerPollMs ?? 100,
    changes,
  );
  let server: ServerType | undefined;
  let served: string | undefined;
  const heartbeats = new HeartbeatBatcher(
    deps,
    heartbeatFlushIntervalMs(deps.settings.staleAfterMs),
    changes,
  );
  heartbeats.start({ timer: false });
  const sweeper = new LivenessSweeper(deps, options.sweepIntervalMs ?? 60_000, heartbeats);
  const backups = options.backups?.(deps, database) ?? null;
  const pools = new PoolFiller(deps, 1_000);
  const {
    app,
    rawRoutes,
    idle,
    activity,
    close: closePlatform,
  } = createPlatform(deps, {
    ...(changes ? { changes } : {}),
    onOperationQueued: (operationId) => void runner.runQueued(operationId),
    onPoolChanged: () => pools.wake(),
    heartbeats,
    ...(backups ? { backups } : {}),
  });
  return {
    app,
    rawRoutes,
    deps,
    database,
    runner,
    sweeper,
    pools,
    heartbeats,
    activity,
    idle,
    clock,
    logs,
    call: (method, path, options = {}) => testCall((init) => app.request(path, init), method, path, options),
    callServed(method, path, options = {}) {
      if (!served) throw new Error("callServed needs listen() first");
      return testCall((init) => fetch(`${served}${path}`, init), method, path, options);
    },
    async listen() {
      const url = await new Promise<string>((resolve) => {
        // As main() serves it: the raw routes in front of the Hono app.
        server = serve(
          {
            fetch: app.fetch,
            port: 0,
            hostname: "127.0.0.1",
            createServer: frontDoorServer(rawRoutes, deps.logger, deps.metrics),
          },
          (info) => resolve(`http://127.0.0.1:${info.port}`),
        );
      });
      deps.settings.publicUrl = url;
      served = url;
      runner.start();
      sweeper.start();
      heartbeats.start();
      activity.start();
      if (options.idleSweepIntervalMs) idle.start(options.idleSweepIntervalMs);
      pools.start();
      return url;
    },
    dropConnections() {
      if (!server || !("closeAllConnections" in server))
        throw new Error("dropConnections needs listen() first");
      server.closeAllConnections();
    },
    async close() {
      deps.events.close();
      if (server) {
        const closed = new Promise((resolve) => server?.close(resolve));
        if ("closeAllConnections" in server) server.closeAllConnections();
        await closed;
      }
      await runner.stop();
      await sweeper.stop();
      await idle.stop();
      await activity.stop();
      await pools.stop();
      closePlatform();
      await heartbeats.stop();
      await changes?.close();
      if (!options.database) await database.drop();
    },
  };
}

import type { IdGenerator } from "@molecule/contracts";
import type { AdvisoryLock, Db } from "@molecule/db";
import type { Sealer } from "@molecule/identity";
import type { Provisioner } from "@molecule/provisioner-core";
import type { ServiceMetrics } from "@molecule/service-kit/metrics";
import type { ReconcileSettings } from "@molecule/service-kit/reconcile";
import type { Logger } from "pino";
import type { Resolver } from "./agent-url-policy.ts";
import type { EventBus } from "./events.ts";

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** What the services and routes are built from; `main()` wires real ones, tests wire real ones too. */
export interface PlatformDeps {
  db: Db;
  /** The database's advisory lock: loops that must run once across replicas (the reconciler) take it. */
  advisoryLock: AdvisoryLock;
  provisioner: Provisioner;
  sealer: Sealer;
  clock: Clock;
  ids: IdGenerator;
  logger: Logger;
  /** Status changes, operation steps, liveness and A2A deliveries, streamed at `GET /events`. */
  events: EventBus;
  /** Served at `GET /metrics` (and on METRICS_PORT); `createPlatform` adds the platform's series to it. */
  metrics: ServiceMetrics;
  settings: PlatformSettings;
  /** How the A2A proxy resolves agent host names at connect time; tests inject one, default is the system DNS. */
  resolveAgentHost?: Resolver;
}

export interface PlatformSettings {
  orgId: string;
  deployment: string;
  adminToken: string | null;
  publicUrl: string;
  allowedRuntimes: readonly string[];
  maxBodyBytes: number;
  /** A2A proxy: upstream timeout, and caps on the forwarded request and on the target's answer. */
  a2aTimeoutMs: number;
  a2aMaxRequestBytes: number;
  a2aMaxResponseBytes: number;
  /** `ALLOW_INSECURE_AGENT_URLS`: plain http:// agent URLs, for loopback (and private addresses if allowed below). */
  allowInsecureAgentUrls: boolean;
  /** `ALLOW_PRIVATE_AGENT_URLS`: agent URLs on loopback, private, link-local or metadata addresses. */
  allowPrivateAgentUrls: boolean;
  staleAfterMs: number;
  /** REDEPLOY_ONLINE_TIMEOUT_SECONDS: how long a redeploy waits for its agent to be online again (default 300 s). */
  redeployOnlineTimeoutMs?: number;
  /**
   * How often a redeploy waiting for its agent re-reads the workspace for a status change this process was not told
   * of (default 500 ms); one it is told of ends the wait at once.
   */
  redeployOnlinePollMs?: number;
  operationLeaseMs: number;
  operationMaxAttempts: number;
  /** OPERATION_DEADLINES: per kind, how long one attempt may run before it is abandoned as hung (default 15 min). */
  operationDeadlinesMs?: Readonly<Record<string, number>>;
  /**
   * IDLE_SUSPEND_AFTER: how long a workspace created without `idle_suspend_seconds` may be idle before it is
   * suspended; null (the default) never.
   */
  idleSuspendAfterMs?: number | null;
  /**
   * A2A_WAKE_TIMEOUT_SECONDS: how long an A2A request to a suspended (or starting) workspace waits for its agent to be
   * back before it is answered 503 `wake_timeout` (default 60 s).
   */
  a2aWakeTimeoutMs?: number;
  /**
   * WORKSPACE_IMAGE_PREFIX and WORKSPACE_IMAGE_TAG: what a runtime's new workspaces start on (docker, flyio), so a warm
   * pool member started on another image is replaced. Absent where the backend chooses (the control plane's).
   */
  workspaceImage?: { prefix: string; tag: string };
  /**
   * Whether warm pool members are suspended once their agent waits (and resumed at their claim): on for flyio, where
   * a started machine is billed and a suspended one resumes in well under a second, and on the controlplane backend
   * when the control plane's can suspend (the start that resumes a member tells the control plane of its claim); off
   * elsewhere, where a running member's claim needs no backend call at all.
   */
  suspendPoolMembers?: boolean;
  /**
   * The longest a claimed member's replacement waits for the claimed workspace to come online before the filler is
   * told to start it (default `REFILL_AFTER_CLAIM_MAX_MS`, 2 s; see `WorkspaceService.refillOnceOnline`).
   */
  refillAfterClaimMaxMs?: number;
  /** Non-secret environment every workspace gets (e.g. AGENT_PORT=0 when workspaces share the host network). */
  workspaceEnv: Record<string, string>;
  /** RECONCILE_INTERVAL, RECONCILE_DELETE_ORPHANS, ORPHAN_GRACE. */
  reconcile: ReconcileSettings;
  /** RATE_LIMIT_*: requests a minute per credential in each budget (0: none); the defaults when absent. */
  rateLimits?: PlatformRateLimits;
}

/**
 * The platform's rate-limit budgets, each counted per credential: `api` (the admin and workspace tokens on the API),
 * `agent` (registration and heartbeats), `a2a` (calls through the A2A proxy), and how many credentials each keeps.
 */
export interface PlatformRateLimits {
  api: number;
  agent: number;
  a2a: number;
  maxKeys: number;
}

import type { IdGenerator } from "@molecule/contracts";
import type { AdvisoryLock, Db } from "@molecule/db";
import type { Sealer } from "@molecule/identity";
import type { Provisioner } from "@molecule/provisioner-core";
import type { EventBus } from "@molecule/service-kit/events";
import type { ServiceMetrics } from "@molecule/service-kit/metrics";
import type { ReconcileSettings } from "@molecule/service-kit/reconcile";
import type { Logger } from "pino";
import type { TenantBackend } from "../tenants/backend.ts";
import type { RolloutEventType } from "./rollout-events.ts";

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** What the services and routes are built from; `main()` wires real ones, tests wire real ones and fakes. */
export interface ControlPlaneDeps {
  db: Db;
  /** The database's advisory lock: loops that must run once across replicas (the reconciler) take it. */
  advisoryLock: AdvisoryLock;
  /** Runs workspaces for every org (docker or flyio); the control plane alone holds its credentials. */
  provisioner: Provisioner;
  /** Runs one tenant platform per org. */
  tenants: TenantBackend;
  sealer: Sealer;
  /** The control plane's event stream (`GET /cp/admin/events`): rollout progress, in this process. */
  events: EventBus<RolloutEventType>;
  /** Served at `GET /metrics` (admin token) and on METRICS_PORT; made with its series by `controlPlaneMetrics`. */
  metrics: ServiceMetrics;
  clock: Clock;
  ids: IdGenerator;
  logger: Logger;
  settings: ControlPlaneSettings;
}

export interface ControlPlaneSettings {
  /** CP_ADMIN_API_TOKEN; null disables the admin API (every admin call is refused). */
  adminToken: string | null;
  /** PROVISION_SHARED_SECRET: the master secret each org's signing key is derived from. Never leaves the CP. */
  provisionSharedSecret: string;
  /** CP_PUBLIC_URL: how tenants reach the control plane. */
  publicUrl: string;
  /** MOLECULE_DEPLOYMENT: labels every workspace and tenant this installation creates. */
  deployment: string;
  maxBodyBytes: number;
  operationLeaseMs: number;
  operationMaxAttempts: number;
  /** OPERATION_DEADLINES: per kind, how long one attempt may run before it is abandoned as hung (default 15 min). */
  operationDeadlinesMs?: Readonly<Record<string, number>>;
  /** TENANT_READY_DEADLINE_SECONDS: how long a started or redeployed tenant may take to report `ready` (5 min). */
  tenantReadyDeadlineMs?: number;
  /** Between two looks for the tenant's `ready` boot event (default 1 s). */
  tenantReadyPollMs?: number;
  /** RECONCILE_INTERVAL, RECONCILE_DELETE_ORPHANS, ORPHAN_GRACE. */
  reconcile: ReconcileSettings;
  backups: BackupSettings;
  /** RATE_LIMIT_*: requests a minute per credential in each budget (0: none); the defaults when absent. */
  rateLimits?: ControlPlaneRateLimits;
}

/**
 * The control plane's rate-limit budgets, each counted per credential: `admin` (CP_ADMIN_API_TOKEN) and `tenant`
 * (each tenant's credential on `/cp/workspaces`, `/cp/operations`, `/cp/tenants`), and how many credentials each keeps.
 */
export interface ControlPlaneRateLimits {
  admin: number;
  tenant: number;
  maxKeys: number;
}

export interface BackupSettings {
  /** BACKUP_STALE_AFTER: a tenant whose last succeeded backup is older than this is flagged stale. */
  staleAfterMs: number;
  /**
   * The TENANT_BACKUP_* variables every tenant is provisioned with (empty when backups are off); the names listed in
   * TENANT_BACKUP_SECRET_KEYS are secret.
   */
  tenantEnv: Record<string, string>;
}

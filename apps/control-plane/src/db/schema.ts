/**
 * The control plane's tables (mirrored by the hand-written drizzle/*.sql; db/schema.test.ts fails when the two differ). All names carry a
 * `cp_` prefix so this schema can live beside a tenant's in one PostgreSQL server or database.
 */
import {
  type BackupFormat,
  type BackupOutcome,
  CP_OPERATION_KINDS,
  type CpOperationResult,
  OPERATION_STATUSES,
  ORG_OPERATION_KINDS,
  ORG_STATUSES,
  type RolloutScope,
  type RolloutTenantStatus,
  type RolloutWorkspace,
} from "@molecule/contracts";
import { sql } from "drizzle-orm";
import {
  bigint,
  bigserial,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgEnum,
  pgSequence,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
} from "drizzle-orm/pg-core";

const ts = (name: string) => timestamp(name, { withTimezone: true });

export { ORG_OPERATION_KINDS };
export const WORKSPACE_OPERATION_KINDS = CP_OPERATION_KINDS;
/** In the database enum's order: a kind added later is appended (ALTER TYPE … ADD VALUE), wherever it belongs. */
export const CP_ALL_OPERATION_KINDS = [
  "provision_tenant",
  "destroy_org",
  ...WORKSPACE_OPERATION_KINDS,
  "stop_tenant",
  "start_tenant",
  "redeploy_tenant",
] as const;
export type CpAnyOperationKind = (typeof CP_ALL_OPERATION_KINDS)[number];

export const cpOrgStatus = pgEnum("cp_org_status", ORG_STATUSES);
export const cpOperationKind = pgEnum("cp_operation_kind", CP_ALL_OPERATION_KINDS);
export const cpOperationStatus = pgEnum("cp_operation_status", OPERATION_STATUSES);

export type StoredHandle = { backend: string } & Record<string, unknown>;

/** Event ids (GET /cp/admin/events), drawn in the NOTIFY that publishes each event: unique on every replica. */
export const cpEventIds = pgSequence("cp_event_ids");

export const cpOrgs = pgTable(
  "cp_orgs",
  {
    id: text("id").primaryKey(),
    slug: text("slug").notNull(),
    name: text("name").notNull(),
    status: cpOrgStatus("status").notNull(),
    tenantHandle: jsonb("tenant_handle").$type<StoredHandle | null>(),
    tenantUrl: text("tenant_url"),
    /** Its tenant runs CANARY_TENANT_IMAGE (on EC2: in the canary account). */
    isCanary: boolean("is_canary").notNull().default(false),
    /** The image its tenant last reported `ready` with (a boot event's `image`). */
    tenantImage: text("tenant_image"),
    /** The tenant's environment (JSON), sealed: a retried provision after a crash uses the same values. */
    tenantEnvSealed: text("tenant_env_sealed"),
    tenantEnvKeyVersion: integer("tenant_env_key_version"),
    createIdempotencyKey: text("create_idempotency_key"),
    createRequestHash: text("create_request_hash"),
    createdAt: ts("created_at").notNull().defaultNow(),
    updatedAt: ts("updated_at").notNull().defaultNow(),
    deletedAt: ts("deleted_at"),
  },
  (table) => [
    // A deleted org stays as a tombstone; its slug may be taken again.
    uniqueIndex("cp_orgs_live_slug_idx")
      .on(table.slug)
      .where(sql`${table.status} <> 'deleted'`),
    uniqueIndex("cp_orgs_create_key_idx").on(table.createIdempotencyKey),
  ],
);

/** Only the SHA-256 hash of each tenant credential is stored. */
export const cpTenantCredentials = pgTable(
  "cp_tenant_credentials",
  {
    tokenHash: text("token_hash").primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => cpOrgs.id),
    createdAt: ts("created_at").notNull().defaultNow(),
  },
  (table) => [index("cp_tenant_credentials_org_idx").on(table.orgId)],
);

export const cpBootEvents = pgTable(
  "cp_boot_events",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => cpOrgs.id),
    stage: text("stage").notNull(),
    detail: text("detail"),
    /** The image the tenant runs, as it reported it. */
    image: text("image"),
    at: ts("at").notNull().defaultNow(),
  },
  (table) => [index("cp_boot_events_org_idx").on(table.orgId, table.id)],
);

/**
 * The backups tenants report (`POST /cp/tenants/backup-report`), succeeded and failed, one row per dump. A report
 * sent again (a retried call) changes nothing: the location is unique per org.
 */
export const cpTenantBackups = pgTable(
  "cp_tenant_backups",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => cpOrgs.id),
    outcome: text("outcome").$type<BackupOutcome>().notNull(),
    location: text("location").notNull(),
    format: text("format").$type<BackupFormat>().notNull(),
    sizeBytes: bigint("size_bytes", { mode: "number" }),
    sha256: text("sha256"),
    startedAt: ts("started_at").notNull(),
    finishedAt: ts("finished_at").notNull(),
    error: text("error"),
    receivedAt: ts("received_at").notNull().defaultNow(),
  },
  (table) => [
    uniqueIndex("cp_tenant_backups_org_location_idx").on(table.orgId, table.location),
    index("cp_tenant_backups_org_finished_idx").on(table.orgId, table.finishedAt),
    check("cp_tenant_backups_outcome_check", sql`${table.outcome} IN ('succeeded', 'failed')`),
  ],
);

/** Workspaces the control plane runs on behalf of a tenant; the id is the tenant's own workspace id. */
export const cpWorkspaces = pgTable(
  "cp_workspaces",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => cpOrgs.id),
    runtime: text("runtime").notNull(),
    tier: integer("tier").notNull(),
    /** What the control plane last made it: provisioning, running, stopped, suspended, destroyed, failed. */
    state: text("state").notNull(),
    handle: jsonb("handle").$type<StoredHandle | null>(),
    /** The warm pool (`<runtime>-t<tier>`) the tenant had it made for, as a member; kept after its claim. */
    pool: text("pool"),
    /** When a start claimed the pool member (the tenant resumes a member only for the create that claimed it). */
    poolClaimedAt: ts("pool_claimed_at"),
    createdAt: ts("created_at").notNull().defaultNow(),
    updatedAt: ts("updated_at").notNull().defaultNow(),
  },
  (table) => [index("cp_workspaces_org_idx").on(table.orgId)],
);

export interface CpOperationStep {
  name: string;
  detail?: string;
  startedAt: string;
  durationMs: number;
}

/** What an org operation was asked to do beyond its kind. */
export interface CpOperationInput {
  /** redeploy_tenant: the image the tenant must run (resolved when the redeploy was asked for). */
  image?: string;
}

export interface CpOperationError {
  code: string;
  message: string;
  retryable: boolean;
}

export const cpOperations = pgTable(
  "cp_operations",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id")
      .notNull()
      .references(() => cpOrgs.id),
    workspaceId: text("workspace_id"),
    subject: text("subject").notNull(),
    kind: cpOperationKind("kind").notNull(),
    status: cpOperationStatus("status").notNull().default("pending"),
    attempts: integer("attempts").notNull().default(0),
    steps: jsonb("steps").$type<CpOperationStep[]>().notNull().default([]),
    result: jsonb("result").$type<CpOperationResult | null>(),
    error: jsonb("error").$type<CpOperationError | null>(),
    idempotencyKey: text("idempotency_key"),
    requestHash: text("request_hash"),
    /** Inputs that must survive a crash and are not secret (a redeploy's image). */
    input: jsonb("input").$type<CpOperationInput | null>(),
    /** Inputs that must survive a crash and are secret (a workspace spec with its env), sealed. */
    sealedInput: text("sealed_input"),
    sealedKeyVersion: integer("sealed_key_version"),
    lockedBy: text("locked_by"),
    lockedUntil: ts("locked_until"),
    runAfter: ts("run_after").notNull().defaultNow(),
    createdAt: ts("created_at").notNull().defaultNow(),
    updatedAt: ts("updated_at").notNull().defaultNow(),
    finishedAt: ts("finished_at"),
  },
  (table) => [
    uniqueIndex("cp_operations_idempotency_idx").on(table.orgId, table.idempotencyKey),
    index("cp_operations_claim_idx").on(table.status, table.runAfter),
    index("cp_operations_subject_idx").on(table.subject, table.createdAt),
  ],
);

/** A rollout's plan, fixed when it is asked for: the phases in order, each a set of tenants taken side by side. */
export interface RolloutPlan {
  canarySlugs: string[];
  batchSize: number;
  soakSeconds: number;
  phases: { name: string; canary: boolean; tenants: { slug: string; orgId: string }[] }[];
}

/** One tenant's progress in a rollout, keyed by slug in `cp_rollouts.tenants`. */
export interface RolloutTenantProgress {
  status: RolloutTenantStatus;
  workspaces: RolloutWorkspace[];
  error: string | null;
}

export const cpRollouts = pgTable(
  "cp_rollouts",
  {
    id: text("id").primaryKey(),
    kind: text("kind").$type<RolloutScope>().notNull(),
    subject: text("subject").notNull(),
    status: cpOperationStatus("status").notNull().default("pending"),
    attempts: integer("attempts").notNull().default(0),
    steps: jsonb("steps").$type<CpOperationStep[]>().notNull().default([]),
    error: jsonb("error").$type<CpOperationError | null>(),
    plan: jsonb("plan").$type<RolloutPlan>().notNull(),
    tenants: jsonb("tenants").$type<Record<string, RolloutTenantProgress>>().notNull().default({}),
    cancelRequestedAt: ts("cancel_requested_at"),
    lockedBy: text("locked_by"),
    lockedUntil: ts("locked_until"),
    runAfter: ts("run_after").notNull().defaultNow(),
    createdAt: ts("created_at").notNull().defaultNow(),
    updatedAt: ts("updated_at").notNull().defaultNow(),
    finishedAt: ts("finished_at"),
  },
  (table) => [
    index("cp_rollouts_claim_idx").on(table.status, table.runAfter),
    index("cp_rollouts_created_idx").on(table.createdAt),
    check("cp_rollouts_kind_check", sql`${table.kind} IN ('tenant', 'fleet')`),
  ],
);

/** Nonces of accepted signed requests, kept until the signature window has passed, so a replay is refused. */
export const cpRequestNonces = pgTable(
  "cp_request_nonces",
  {
    orgId: text("org_id")
      .notNull()
      .references(() => cpOrgs.id),
    nonce: text("nonce").notNull(),
    expiresAt: ts("expires_at").notNull(),
  },
  (table) => [
    primaryKey({ columns: [table.orgId, table.nonce] }),
    index("cp_request_nonces_expiry_idx").on(table.expiresAt),
  ],
);

/**
 * The AMI a runtime boots from in a region (EC2 backends); `tenant-platform` is the tenants' runtime. With no row the
 * backends use EC2_AMI, else fail (not retried). Edited through /cp/admin/ami-pins.
 */
export const cpThinAmiPins = pgTable(
  "cp_thin_ami_pins",
  {
    runtime: text("runtime").notNull(),
    region: text("region").notNull(),
    amiId: text("ami_id").notNull(),
    createdAt: ts("created_at").notNull().defaultNow(),
    updatedAt: ts("updated_at").notNull().defaultNow(),
  },
  (table) => [
    primaryKey({ columns: [table.runtime, table.region] }),
    check("cp_thin_ami_pins_ami_id_check", sql`${table.amiId} ~ '^ami-[0-9a-f]{8,17}$'`),
  ],
);

/**
 * The resource audit of what the control plane's backends create (workspace VMs and containers, tenants and what they
 * own): `subject_id` is the workspace id, or the org id for a tenant's resources. A row is written before each create
 * call (`intent`), completed with the provider's id (`claimed`), `released` once the subject's destroy succeeded.
 */
export const cpTenantResources = pgTable(
  "cp_tenant_resources",
  {
    subjectId: text("subject_id").notNull(),
    orgId: text("org_id").notNull(),
    backend: text("backend").notNull(),
    kind: text("kind").notNull(),
    name: text("name").notNull(),
    providerId: text("provider_id"),
    state: text("state").notNull(),
    createdAt: ts("created_at").notNull().defaultNow(),
    updatedAt: ts("updated_at").notNull().defaultNow(),
    releasedAt: ts("released_at"),
  },
  (table) => [
    primaryKey({ columns: [table.subjectId, table.kind, table.name] }),
    index("cp_tenant_resources_open_idx").on(table.backend, table.state),
    check("cp_tenant_resources_state_check", sql`${table.state} IN ('intent', 'claimed', 'released')`),
  ],
);

/** One reconcile pass, whichever replica ran it: what the admin stats show as the last reconcile. */
export const cpReconcileRuns = pgTable(
  "cp_reconcile_runs",
  {
    id: text("id").primaryKey(),
    /** The process that ran it (host and process id). */
    replica: text("replica").notNull(),
    startedAt: ts("started_at").notNull(),
    finishedAt: ts("finished_at").notNull(),
    durationMs: integer("duration_ms").notNull(),
    orphans: integer("orphans").notNull(),
    ghosts: integer("ghosts").notNull(),
    deleted: integer("deleted").notNull(),
    /** The whole report (contracts' ReconcileReport). */
    report: jsonb("report").notNull(),
  },
  (table) => [index("cp_reconcile_runs_started_idx").on(table.startedAt)],
);

/** Each resource the reconciler found unclaimed, with when it first did (ORPHAN_GRACE counts from then). */
export const cpOrphanSightings = pgTable(
  "cp_orphan_sightings",
  {
    backend: text("backend").notNull(),
    kind: text("kind").notNull(),
    providerId: text("provider_id").notNull(),
    firstSeenAt: ts("first_seen_at").notNull(),
    lastSeenAt: ts("last_seen_at").notNull(),
  },
  (table) => [primaryKey({ columns: [table.backend, table.kind, table.providerId] })],
);

export type CpOrgRow = typeof cpOrgs.$inferSelect;
export type CpWorkspaceRow = typeof cpWorkspaces.$inferSelect;
export type CpOperationRow = typeof cpOperations.$inferSelect;
export type CpTenantBackupRow = typeof cpTenantBackups.$inferSelect;
export type CpRolloutRow = typeof cpRollouts.$inferSelect;

/** Every table, children first: the order a full cleanup deletes in. */
export const CP_TABLES = [
  cpRollouts,
  cpReconcileRuns,
  cpOrphanSightings,
  cpTenantResources,
  cpRequestNonces,
  cpOperations,
  cpWorkspaces,
  cpBootEvents,
  cpTenantBackups,
  cpTenantCredentials,
  cpOrgs,
  cpThinAmiPins,
] as const;

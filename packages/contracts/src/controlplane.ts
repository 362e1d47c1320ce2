/**
 * The tenant ↔ control-plane wire format. Both sides import these schemas and constants, so a change here is a change
 * to the protocol. No I/O and no crypto: the signing functions are `@molecule/identity`'s. Tenant calls carry:
 *
 *   Authorization: Bearer <tenant credential>      (identifies the org; the control plane stores only its hash)
 *   X-Molecule-Timestamp: <unix seconds>
 *   X-Molecule-Nonce: <random, unique per request>
 *   X-Molecule-Signature: v1=<hex HMAC-SHA256 of the canonical request with the tenant's signing key>
 */
import { z } from "zod";
import { WorkspaceId } from "./ids.ts";
import { OperationStatus } from "./status.ts";
import { multiLineText, singleLineText, storableJson } from "./text.ts";
import { EnvValue, SecretKey } from "./workspaces.ts";

export const CP_HEADERS = {
  timestamp: "x-molecule-timestamp",
  nonce: "x-molecule-nonce",
  signature: "x-molecule-signature",
} as const;

/** Requests signed further than this from the control plane's clock, either way, are refused. */
export const SIGNATURE_WINDOW_SECONDS = 300;
/**
 * How long past the last moment its request can be accepted a nonce is still kept: replicas whose clocks disagree by
 * less than this never accept a replay of a nonce another replica has already pruned.
 */
export const NONCE_GRACE_MS = 1_000;
/** The signature scheme's version, the `v1=` of the signature header. */
export const SIGNATURE_VERSION = "v1";

// ---- orgs (admin, CP_ADMIN_API_TOKEN) ----

export const OrgSlug = z
  .string()
  .regex(
    /^[a-z][a-z0-9-]{1,38}[a-z0-9]$/,
    "slug must be 3-40 characters: lower-case letters, digits and dashes",
  );

export const CreateOrgBody = z.strictObject({
  slug: OrgSlug,
  name: singleLineText().trim().min(1).max(100),
  /** Its tenant runs the canary image (and, on EC2, in the canary account). */
  is_canary: z.boolean().optional(),
});
export type CreateOrgBody = z.infer<typeof CreateOrgBody>;

export const DeleteOrgBody = z.strictObject({ confirm: singleLineText().max(100) });

/** `stopped`: an operator stopped its tenant (POST /cp/admin/tenants/:slug/stop); a start makes it `provisioning` again. */
export const ORG_STATUSES = ["provisioning", "ready", "failed", "deleting", "deleted", "stopped"] as const;
export const OrgStatus = z.enum(ORG_STATUSES);
export type OrgStatus = z.infer<typeof OrgStatus>;

/** An org as the admin API shows it (every `/cp/orgs` answer carries it). */
export const OrgView = z.object({
  id: z.string(),
  slug: z.string(),
  name: z.string(),
  status: OrgStatus,
  tenant_url: z.string().nullable(),
  is_canary: z.boolean(),
  /** The image the tenant last reported `ready` with (null until a tenant reports one). */
  tenant_image: z.string().nullable(),
  created_at: z.string(),
  updated_at: z.string(),
});
export type OrgView = z.infer<typeof OrgView>;

/**
 * An org-level operation (the tenant's provision, the org's delete, the tenant's stop, start and redeploy: see
 * ORG_OPERATION_KINDS) as the admin API shows it.
 */
export const OrgOperationView = z.object({
  id: z.string(),
  kind: z.string(),
  status: OperationStatus,
  attempts: z.number().int().nonnegative(),
  steps: z.array(z.object({ name: z.string(), detail: z.string().optional(), duration_ms: z.number() })),
  error: z.object({ code: z.string(), message: z.string(), retryable: z.boolean() }).nullable(),
  created_at: z.string(),
  finished_at: z.string().nullable(),
});
export type OrgOperationView = z.infer<typeof OrgOperationView>;

/** `GET /cp/orgs`: the orgs that are not deleted, oldest first. */
export const OrgList = z.object({ orgs: z.array(OrgView) });
export type OrgList = z.infer<typeof OrgList>;

/**
 * `POST /cp/orgs` (201): the tenant's credential and admin token, shown here once (and again only to a replay of the
 * same Idempotency-Key and body).
 */
export const CreatedOrg = z.object({
  org: OrgView,
  tenant_credential: z.string(),
  tenant_admin_token: z.string(),
});
export type CreatedOrg = z.infer<typeof CreatedOrg>;

/** `DELETE /cp/orgs/:slug` (202): the org and its delete operation (none when it was already deleted). */
export const DeletedOrg = z.object({ org: OrgView, operation: OrgOperationView.nullable() });
export type DeletedOrg = z.infer<typeof DeletedOrg>;

export const TENANT_BOOT_STAGES = ["container_started", "migrated", "listening", "ready", "failed"] as const;
export const TenantBootStage = z.enum(TENANT_BOOT_STAGES);

/**
 * A container image reference (`[registry[:port]/]name[:tag][@sha256:digest]`), checked before it reaches a backend
 * or a shell command: lower-case path components, no spaces, no shell characters.
 */
export const ImageRef = z
  .string()
  .max(255)
  .regex(
    /^(?:[A-Za-z0-9.-]+(?::\d{1,5})?\/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(?:@sha256:[a-f0-9]{64})?$/,
    "image must be an image reference such as ghcr.io/acme/tenant-platform:1.2.3",
  );

export const BootEventBody = z.strictObject({
  stage: TenantBootStage,
  detail: multiLineText().max(1000).optional(),
  /** The image the tenant runs (MOLECULE_IMAGE, set by the tenant backend): a redeploy waits for it on `ready`. */
  image: ImageRef.optional(),
});
export type BootEventBody = z.infer<typeof BootEventBody>;

/** `GET /cp/orgs/:slug`: the org, its tenant's boot events and its latest org-level operation (none once deleted). */
export const OrgDetail = z.object({
  org: OrgView,
  provision_status: z
    .object({
      status: OrgStatus,
      tenant_url: z.string().nullable(),
      events: z.array(
        z.object({
          stage: z.string(),
          detail: z.string().nullable(),
          /** The image the tenant reported it runs (null for a tenant that does not say). */
          image: z.string().nullable(),
          at: z.string(),
        }),
      ),
      last_error: z.string().nullable(),
    })
    .nullable(),
  operation: OrgOperationView.nullable(),
});
export type OrgDetail = z.infer<typeof OrgDetail>;

// ---- workspaces (tenant, signed) ----

/** A warm pool's label, `<runtime>-t<tier>` (provisioner-core's `poolLabel`). */
export const CpPoolLabel = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}-t[234]$/);

/** The workspace spec a tenant asks the control plane to run; mirrors provisioner-core's WorkspaceSpec. */
export const CpWorkspaceSpec = z.strictObject({
  /** A workspace id the tenant minted (`ws_…`); the control plane names resources after it, so nothing else passes. */
  workspace_id: WorkspaceId,
  runtime: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/),
  tier: z.union([z.literal(2), z.literal(3), z.literal(4)]),
  env: z.record(SecretKey, EnvValue),
  secret_keys: z.array(SecretKey).max(200),
  metadata: storableJson(z.record(z.string(), z.unknown())).default({}),
  /**
   * Set when the tenant starts the workspace as a warm pool member (`<runtime>-t<tier>`): the control plane labels
   * what its backend makes with it and counts the member in the org's pools until a start claims it.
   */
  pool: CpPoolLabel.optional(),
});
export type CpWorkspaceSpec = z.infer<typeof CpWorkspaceSpec>;

/** provision and start carry the spec (start rebuilds from it when `recreate` is set or resources are missing). */
export const CpProvisionBody = CpWorkspaceSpec;
export const CpStartBody = z.strictObject({ spec: CpWorkspaceSpec, recreate: z.boolean().default(false) });
export type CpStartBody = z.infer<typeof CpStartBody>;

export const CP_OPERATION_KINDS = ["provision", "start", "stop", "suspend", "destroy"] as const;
export const CpOperationKind = z.enum(CP_OPERATION_KINDS);
export type CpOperationKind = z.infer<typeof CpOperationKind>;

/**
 * What a finished operation reports beyond success. suspend: whether the backend suspended (false: it stopped
 * instead, and why). provision and start: `agent_url`, the address the workspace backend assigned the agent (its
 * handle's `agentUrl`), which the tenant keeps in its own handle and lets that workspace register.
 */
export const CpOperationResult = z.object({
  suspended: z.boolean().optional(),
  reason: z.string().optional(),
  agent_url: z.string().max(2048).optional(),
});
export type CpOperationResult = z.infer<typeof CpOperationResult>;

export const CpOperationView = z.object({
  id: z.string(),
  workspace_id: z.string(),
  kind: CpOperationKind,
  status: z.enum(["pending", "running", "succeeded", "failed"]),
  steps: z.array(z.object({ name: z.string(), detail: z.string().optional(), duration_ms: z.number() })),
  result: CpOperationResult.nullable(),
  error: z.object({ code: z.string(), message: z.string(), retryable: z.boolean() }).nullable(),
  created_at: z.string(),
  finished_at: z.string().nullable(),
});
export type CpOperationView = z.infer<typeof CpOperationView>;

/** Every mutating workspace call answers 202 with the operation; GET /cp/operations/:id is polled until it ends. */
export const CpAccepted = z.object({ operation: CpOperationView });

export const CpRuntimeStatus = z.object({
  state: z.enum(["running", "starting", "stopped", "suspended", "missing", "unknown"]),
  detail: z.string().optional(),
});

export const CpManagedWorkspace = z.object({
  workspace_id: z.string(),
  state: z.string(),
});

/** GET /cp/tenants/config: what a tenant needs at start-up. */
export const TenantRuntimeConfig = z.object({
  org_id: z.string(),
  slug: z.string(),
  workspace_backend: z.string(),
  capabilities: z.object({ suspend: z.boolean(), suspendMaxMemoryMb: z.number().optional() }),
  settings: z.record(z.string(), z.unknown()),
});
export type TenantRuntimeConfig = z.infer<typeof TenantRuntimeConfig>;

/**
 * One warm pool of an org as the control plane holds it (`GET /cp/orgs/:id/pools`): the pool members its tenant had
 * it make, by what the control plane last made them. The tenant owns the pool (its target, the claims); the control
 * plane learns of a claim from the start that resumes the member.
 */
export const CpOrgPool = z.object({
  pool: CpPoolLabel,
  runtime: z.string(),
  tier: z.number().int(),
  /** Members not claimed yet, counted by state (provisioning, running, suspended, stopped, failed). */
  members: z.record(z.string(), z.number().int().nonnegative()),
  /** Members not claimed yet, all states together. */
  unclaimed: z.number().int().nonnegative(),
  /** Members a create claimed whose workspace is not destroyed (ordinary workspaces now). */
  claimed: z.number().int().nonnegative(),
});
export type CpOrgPool = z.infer<typeof CpOrgPool>;
export const CpOrgPoolList = z.object({ org_id: z.string(), pools: z.array(CpOrgPool) });
export type CpOrgPoolList = z.infer<typeof CpOrgPoolList>;

/** `GET /cp/workspaces`: the calling tenant's workspaces that are not destroyed. */
export const CpWorkspaceList = z.object({ workspaces: z.array(CpManagedWorkspace) });

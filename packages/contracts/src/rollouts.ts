/**
 * Workspace image rollouts the control plane drives over its tenants' APIs: one tenant's workspaces
 * (`POST /cp/admin/tenants/:slug/workspaces/redeploy`) or the whole fleet, canaries first
 * (`POST /cp/admin/tenants/workspaces/redeploy-fleet`), read back with `GET /cp/admin/rollouts/:id` and stopped with
 * `POST /cp/admin/rollouts/:id/cancel`.
 */
import { z } from "zod";
import { OrgSlug } from "./controlplane.ts";

/** The most tenants one request may name as canaries. */
export const MAX_CANARY_SLUGS = 100;

export const FleetRedeployBody = z.strictObject({
  /** Tenants redeployed first, then watched for `soak_seconds`; each must be an org that exists. */
  canary_slugs: z
    .array(OrgSlug)
    .max(MAX_CANARY_SLUGS)
    .refine((slugs) => new Set(slugs).size === slugs.length, "canary_slugs names a tenant twice")
    .default([]),
  /** How many of the other tenants are redeployed side by side (each one's workspaces one at a time). */
  batch_size: z.number().int().min(1).max(100).default(5),
  /** How long every canary workspace must stay online before the rest begin. */
  soak_seconds: z.number().int().min(0).max(86_400).default(300),
  /** Only answer with the plan: nothing is recorded, no workspace is touched. */
  dry_run: z.boolean().default(false),
});
export type FleetRedeployBody = z.infer<typeof FleetRedeployBody>;

export const TenantRedeployBody = z.strictObject({
  dry_run: z.boolean().default(false),
});
export type TenantRedeployBody = z.infer<typeof TenantRedeployBody>;

export const ROLLOUT_SCOPES = ["tenant", "fleet"] as const;
export const RolloutScope = z.enum(ROLLOUT_SCOPES);
export type RolloutScope = z.infer<typeof RolloutScope>;

/** `cancelled`: an operator asked it to stop; what it had done stays done. */
export const ROLLOUT_STATUSES = ["pending", "running", "succeeded", "failed", "cancelled"] as const;
export const RolloutStatus = z.enum(ROLLOUT_STATUSES);
export type RolloutStatus = z.infer<typeof RolloutStatus>;

export const ROLLOUT_TENANT_STATUSES = ["pending", "running", "succeeded", "failed", "skipped"] as const;
export const RolloutTenantStatus = z.enum(ROLLOUT_TENANT_STATUSES);
export type RolloutTenantStatus = z.infer<typeof RolloutTenantStatus>;

/** What a rollout did (or, in a dry run, would do) to one workspace. */
export const ROLLOUT_WORKSPACE_OUTCOMES = ["redeploy", "redeployed", "skipped", "failed"] as const;
export const RolloutWorkspace = z.object({
  id: z.string(),
  name: z.string(),
  /** The workspace's status when the rollout reached it. */
  status: z.string(),
  outcome: z.enum(ROLLOUT_WORKSPACE_OUTCOMES),
  /** Why it was skipped or failed. */
  reason: z.string().optional(),
  /** The tenant's redeploy operation (read it with the tenant's `GET /operations/:id`). */
  operation_id: z.string().optional(),
});
export type RolloutWorkspace = z.infer<typeof RolloutWorkspace>;

export const RolloutTenant = z.object({
  slug: z.string(),
  org_id: z.string(),
  /** `canary` or `batch <n>`. */
  phase: z.string(),
  status: RolloutTenantStatus,
  workspaces: z.array(RolloutWorkspace),
  error: z.string().nullable(),
});
export type RolloutTenant = z.infer<typeof RolloutTenant>;

export const RolloutView = z.object({
  /** null for a dry run: nothing was recorded. */
  id: z.string().nullable(),
  scope: RolloutScope,
  status: RolloutStatus,
  dry_run: z.boolean(),
  canary_slugs: z.array(z.string()),
  batch_size: z.number(),
  soak_seconds: z.number(),
  /** One line per tenant in the order the rollout takes them. */
  tenants: z.array(RolloutTenant),
  steps: z.array(z.object({ name: z.string(), detail: z.string().optional(), duration_ms: z.number() })),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
  cancel_requested: z.boolean(),
  created_at: z.string().nullable(),
  finished_at: z.string().nullable(),
});
export type RolloutView = z.infer<typeof RolloutView>;

/** 202 for a rollout that was queued; 200 with `dry_run: true` and `status: "pending"` for a plan. */
export const RolloutAccepted = z.object({ rollout: RolloutView });
export type RolloutAccepted = z.infer<typeof RolloutAccepted>;

export const RolloutList = z.object({ rollouts: z.array(RolloutView) });
export type RolloutList = z.infer<typeof RolloutList>;

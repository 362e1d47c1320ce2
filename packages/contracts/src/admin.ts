import { z } from "zod";
import { PoolView } from "./pools.ts";

/** A live resource of this deployment and environment that no live claim (workspace, org or audit row) owns. */
export const OrphanResource = z.object({
  backend: z.string(),
  kind: z.string(),
  /** The provider's id (container id, volume name, Fly machine id, EC2 instance/group id, secret ARN). */
  provider_id: z.string(),
  workspace_id: z.string().nullable(),
  org_id: z.string().nullable(),
  /** When this reconciler first saw it without a claim (resources carry no creation time every backend reports). */
  first_seen_at: z.string(),
  age_ms: z.number().int().nonnegative(),
  /** Removed in this pass (RECONCILE_DELETE_ORPHANS=true and older than ORPHAN_GRACE). */
  deleted: z.boolean(),
});
export type OrphanResource = z.infer<typeof OrphanResource>;

/** A claim whose resource is gone: a workspace or tenant the database shows live with nothing behind it. */
export const GhostClaim = z.object({
  backend: z.string(),
  /** `workspace` or `tenant`. */
  subject: z.string(),
  id: z.string(),
  org_id: z.string().nullable(),
  /** What the row showed (workspace status, org status). */
  status: z.string(),
  reason: z.string(),
  /** What the reconciler did: `marked_failed`, or `reported`. */
  action: z.enum(["marked_failed", "reported"]),
});
export type GhostClaim = z.infer<typeof GhostClaim>;

/** One reconcile pass, as `POST …/admin/reconcile` answers it and the stats' `lastReconcile` holds it. */
export const ReconcileReport = z.object({
  at: z.string(),
  /** The process that ran the pass (host and process id, as its logs name it). */
  replica: z.string(),
  durationMs: z.number().int().nonnegative(),
  orphans: z.number().int().nonnegative(),
  ghosts: z.number().int().nonnegative(),
  orphanList: z.array(OrphanResource),
  ghostList: z.array(GhostClaim),
  deleted: z.number().int().nonnegative(),
  deleteOrphans: z.boolean(),
  orphanGraceMs: z.number().int().nonnegative(),
  /** Live resources of this deployment and environment, per backend and per org (`none` when untagged). */
  resources: z.object({
    byBackend: z.record(z.string(), z.number().int().nonnegative()),
    byOrg: z.record(z.string(), z.number().int().nonnegative()),
    /**
     * Unclaimed warm pool members (their machine or container), per pool: `<runtime>-t<tier>` on a tenant,
     * `<org id>/<runtime>-t<tier>` on the control plane.
     */
    byPool: z.record(z.string(), z.number().int().nonnegative()).optional(),
  }),
  /** Backends whose listing failed: nothing of theirs was judged in this pass. */
  errors: z.array(z.object({ backend: z.string(), message: z.string() })),
});
export type ReconcileReport = z.infer<typeof ReconcileReport>;

/** `GET /cp/admin/stats` and a tenant's `GET /admin/stats`. */
export const AdminStats = z.object({
  orphans: z.number().int().nonnegative(),
  ghosts: z.number().int().nonnegative(),
  resources: ReconcileReport.shape.resources,
  orphanList: z.array(OrphanResource),
  ghostList: z.array(GhostClaim),
  /** Operation rows by kind, then status. */
  operations: z.record(z.string(), z.record(z.string(), z.number().int().nonnegative())),
  oldestRunning: z
    .object({ id: z.string(), kind: z.string(), startedAt: z.string(), ageMs: z.number().int() })
    .nullable(),
  lastReconcile: ReconcileReport.omit({ orphanList: true, ghostList: true, resources: true }).nullable(),
  /** Operations that had at least one attempt abandoned as hung past their kind's deadline (OPERATION_DEADLINES). */
  hung: z.number().int().nonnegative(),
  /** A tenant's warm pools (`GET /pools`); the control plane has none. */
  pools: z.array(PoolView).optional(),
});
export type AdminStats = z.infer<typeof AdminStats>;

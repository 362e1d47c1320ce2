import {
  AdminStats,
  DomainError,
  ReconcileReport,
  TenantBackupRun,
  TenantBackupRunList,
} from "@molecule/contracts";
import type { ApiRoute } from "@molecule/service-kit/openapi";
import type { Reconciler } from "@molecule/service-kit/reconcile";
import { Hono } from "hono";
import { requireAdmin } from "../http/auth.ts";
import type { AppEnv } from "../http/types.ts";
import type { TenantBackups } from "../services/backups.ts";
import type { PlatformDeps } from "../services/deps.ts";
import type { PoolService } from "../services/pools.ts";
import { tenantStats } from "../services/reconcile.ts";

/**
 * `POST /admin/reconcile` (one pass now, answered with its report; 409 while another replica reconciles), `GET
 * /admin/stats`, `POST /admin/backup` (a database backup now, answered with its record; 409 while one runs, or when
 * backups are not configured) and `GET /admin/backups` (the latest attempts).
 */
export function adminRoutes(
  deps: PlatformDeps,
  reconciler: Reconciler,
  backups: TenantBackups | null,
  pools: PoolService,
) {
  const app = new Hono<AppEnv>();
  app.use("*", requireAdmin());
  app.post("/reconcile", async (c) => c.json(await reconciler.run()));
  app.get("/stats", async (c) =>
    c.json({ ...(await tenantStats(deps, reconciler)), pools: await pools.list() }),
  );
  const configured = () => {
    if (!backups) {
      throw new DomainError("conflict", "backups are not configured: TENANT_BACKUP_S3_PREFIX is empty");
    }
    return backups;
  };
  app.post("/backup", async (c) => c.json(await configured().runNow()));
  app.get("/backups", async (c) => c.json({ backups: await configured().list() }));
  return app;
}

export const adminApi: ApiRoute[] = [
  {
    method: "POST",
    path: "/admin/reconcile",
    summary: "Reconcile now",
    description: "One pass comparing the database with the backend's resources, answered with its report.",
    tag: "admin",
    auth: ["admin"],
    responses: { 200: { description: "The pass's report", schema: ReconcileReport } },
    errors: [403, 409],
  },
  {
    method: "GET",
    path: "/admin/stats",
    summary: "Operation and reconcile figures",
    tag: "admin",
    auth: ["admin"],
    responses: { 200: { description: "The figures", schema: AdminStats } },
    errors: [403],
  },
  {
    method: "POST",
    path: "/admin/backup",
    summary: "Back the database up now",
    tag: "admin",
    auth: ["admin"],
    responses: { 200: { description: "The attempt's record", schema: TenantBackupRun } },
    errors: [403, 409],
  },
  {
    method: "GET",
    path: "/admin/backups",
    summary: "The latest backup attempts",
    tag: "admin",
    auth: ["admin"],
    responses: { 200: { description: "Newest first", schema: TenantBackupRunList } },
    errors: [403, 409],
  },
];

import {
  type BackupRecord,
  type BackupReportBody,
  type BackupsOverview,
  DomainError,
  S3_URL_PATTERN,
} from "@molecule/contracts";
import { asc, desc, eq, ne } from "drizzle-orm";
import { type CpTenantBackupRow, cpOrgs, cpTenantBackups } from "../db/schema.ts";
import type { TenantCaller } from "../http/types.ts";
import type { ControlPlaneDeps } from "./deps.ts";

/**
 * The key's last two segments are `<slug>/<timestamp…>`: a tenant's dumps live under its own slug, so a report
 * naming another org's folder is refused like a report naming another org.
 */
function underSlug(location: string, slug: string): boolean {
  const key = S3_URL_PATTERN.exec(location)?.[2] ?? "";
  const segments = key.split("/");
  return segments.length >= 2 && segments[segments.length - 2] === slug && segments.at(-1) !== "";
}

/**
 * Records a tenant's backup report. A tenant reports for its own org only (403 otherwise); the same location sent
 * again (a retried call) is recorded once.
 */
export async function recordBackupReport(
  deps: ControlPlaneDeps,
  tenant: TenantCaller,
  report: BackupReportBody,
): Promise<void> {
  if (report.slug !== tenant.slug) {
    throw new DomainError("forbidden", "a tenant reports backups for its own org only");
  }
  if (!underSlug(report.location, tenant.slug)) {
    throw new DomainError(
      "forbidden",
      "a backup's location must be under the org's own slug (…/<slug>/<name>)",
    );
  }
  await deps.db
    .insert(cpTenantBackups)
    .values({
      orgId: tenant.orgId,
      outcome: report.outcome,
      location: report.location,
      format: report.format,
      sizeBytes: report.size_bytes,
      sha256: report.sha256,
      startedAt: new Date(report.started_at),
      finishedAt: new Date(report.finished_at),
      error: report.outcome === "failed" ? (report.error ?? null) : null,
      receivedAt: deps.clock.now(),
    })
    .onConflictDoNothing();
}

function record(row: CpTenantBackupRow): BackupRecord {
  return {
    outcome: row.outcome,
    location: row.location,
    format: row.format,
    size_bytes: row.sizeBytes,
    sha256: row.sha256,
    started_at: row.startedAt.toISOString(),
    finished_at: row.finishedAt.toISOString(),
    error: row.error,
    received_at: row.receivedAt.toISOString(),
  };
}

/**
 * The last backup of every org not deleted, its last succeeded one, and two flags: `stale` (no succeeded backup
 * finished within `staleAfterMs`, or none ever) and `failed` (the latest report is a failure).
 */
export async function backupsOverview(
  deps: ControlPlaneDeps,
  staleAfterMs: number,
): Promise<BackupsOverview> {
  const { db } = deps;
  const orgs = await db
    .select({ id: cpOrgs.id, slug: cpOrgs.slug, status: cpOrgs.status })
    .from(cpOrgs)
    .where(ne(cpOrgs.status, "deleted"))
    .orderBy(asc(cpOrgs.slug));
  const latest = await db
    .selectDistinctOn([cpTenantBackups.orgId])
    .from(cpTenantBackups)
    .orderBy(cpTenantBackups.orgId, desc(cpTenantBackups.finishedAt), desc(cpTenantBackups.id));
  const latestSuccess = await db
    .selectDistinctOn([cpTenantBackups.orgId])
    .from(cpTenantBackups)
    .where(eq(cpTenantBackups.outcome, "succeeded"))
    .orderBy(cpTenantBackups.orgId, desc(cpTenantBackups.finishedAt), desc(cpTenantBackups.id));
  const last = new Map(latest.map((row) => [row.orgId, row]));
  const lastSuccess = new Map(latestSuccess.map((row) => [row.orgId, row]));
  const cutoff = deps.clock.now().getTime() - staleAfterMs;
  const tenants = orgs.map((org) => {
    const lastRow = last.get(org.id);
    const successRow = lastSuccess.get(org.id);
    return {
      org_id: org.id,
      slug: org.slug,
      org_status: org.status,
      last: lastRow ? record(lastRow) : null,
      last_success: successRow ? record(successRow) : null,
      stale: !successRow || successRow.finishedAt.getTime() < cutoff,
      failed: lastRow?.outcome === "failed",
    };
  });
  return {
    stale_after_ms: staleAfterMs,
    tenants,
    summary: {
      tenants: tenants.length,
      stale: tenants.filter((tenant) => tenant.stale).length,
      failed: tenants.filter((tenant) => tenant.failed).length,
    },
  };
}

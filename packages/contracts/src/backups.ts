/**
 * Tenant database backups: what a tenant reports to the control plane after each dump (`POST
 * /cp/tenants/backup-report`, signed like every tenant call) and what the operator reads back (`GET
 * /cp/admin/backups`).
 */
import { z } from "zod";
import { OrgSlug } from "./controlplane.ts";
import { singleLineText } from "./text.ts";

export const BACKUP_OUTCOMES = ["succeeded", "failed"] as const;
export const BackupOutcome = z.enum(BACKUP_OUTCOMES);
export type BackupOutcome = z.infer<typeof BackupOutcome>;

/**
 * How a dump was made, which says how it is restored: `pg_dump_custom` (PostgreSQL, `pg_restore`), `pg_dump_plain`
 * (PostgreSQL, `psql`), `pglite_datadir_tgz` (the embedded database's data folder, loaded with PGlite's
 * `loadDataDir`).
 */
export const BACKUP_FORMATS = ["pg_dump_custom", "pg_dump_plain", "pglite_datadir_tgz"] as const;
export const BackupFormat = z.enum(BACKUP_FORMATS);
export type BackupFormat = z.infer<typeof BackupFormat>;

/** `s3://<bucket>/<key>`: a bucket name as S3 allows it, then a key of printable characters. */
export const S3_URL_PATTERN = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/([^\s]*))?$/;

/** A bucket and the key prefix under it (no leading or trailing slash; empty for the bucket's root). */
export interface S3Prefix {
  bucket: string;
  keyPrefix: string;
}

/** `s3://bucket/some/prefix/` → `{bucket, keyPrefix: "some/prefix"}`; null when it is not an s3:// URL. */
export function parseS3Prefix(text: string): S3Prefix | null {
  const match = S3_URL_PATTERN.exec(text.trim());
  if (!match?.[1]) return null;
  return { bucket: match[1], keyPrefix: (match[2] ?? "").replace(/^\/+|\/+$/g, "") };
}

const isoTime = z.iso.datetime({ offset: true });

export const BackupReportBody = z
  .strictObject({
    /** The reporting org's slug: a tenant reports for its own org only. */
    slug: OrgSlug,
    outcome: BackupOutcome,
    /** Where the dump is (or was to be): `s3://<bucket>/<prefix>/<slug>/<timestamp>`. */
    location: singleLineText().max(1024).regex(S3_URL_PATTERN, "location must be an s3://bucket/key URL"),
    format: BackupFormat,
    /** Bytes uploaded; null when the upload failed. */
    size_bytes: z.number().int().nonnegative().nullable(),
    /** SHA-256 of the uploaded bytes, lower-case hex; null when the upload failed. */
    sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/, "sha256 must be 64 lower-case hex characters")
      .nullable(),
    started_at: isoTime,
    finished_at: isoTime,
    /** Why it failed, one line with no secret in it (failed reports only). */
    error: singleLineText().max(1000).optional(),
  })
  .superRefine((body, ctx) => {
    if (body.outcome === "succeeded" && (body.size_bytes === null || body.sha256 === null)) {
      ctx.addIssue({
        code: "custom",
        path: ["size_bytes"],
        message: "a succeeded backup has size_bytes and sha256",
      });
    }
    if (body.outcome === "failed" && !body.error) {
      ctx.addIssue({ code: "custom", path: ["error"], message: "a failed backup says why in error" });
    }
    if (Date.parse(body.finished_at) < Date.parse(body.started_at)) {
      ctx.addIssue({ code: "custom", path: ["finished_at"], message: "finished_at is before started_at" });
    }
  });
export type BackupReportBody = z.infer<typeof BackupReportBody>;

/** One backup as the control plane recorded it. */
export const BackupRecord = z.object({
  outcome: BackupOutcome,
  location: z.string(),
  format: BackupFormat,
  size_bytes: z.number().int().nonnegative().nullable(),
  sha256: z.string().nullable(),
  started_at: z.string(),
  finished_at: z.string(),
  error: z.string().nullable(),
  received_at: z.string(),
});
export type BackupRecord = z.infer<typeof BackupRecord>;

/** One tenant's line in `GET /cp/admin/backups`. */
export const TenantBackupStatus = z.object({
  org_id: z.string(),
  slug: z.string(),
  org_status: z.string(),
  /** The most recent report, whatever its outcome; null when the tenant never reported one. */
  last: BackupRecord.nullable(),
  /** The most recent succeeded backup: what a restore would use. */
  last_success: BackupRecord.nullable(),
  /** No succeeded backup within BACKUP_STALE_AFTER (or none at all). */
  stale: z.boolean(),
  /** The most recent report is a failure. */
  failed: z.boolean(),
});
export type TenantBackupStatus = z.infer<typeof TenantBackupStatus>;

/** `GET /cp/admin/backups`. */
export const BackupsOverview = z.object({
  /** BACKUP_STALE_AFTER in milliseconds. */
  stale_after_ms: z.number().int().positive(),
  tenants: z.array(TenantBackupStatus),
  summary: z.object({
    tenants: z.number().int().nonnegative(),
    stale: z.number().int().nonnegative(),
    failed: z.number().int().nonnegative(),
  }),
});
export type BackupsOverview = z.infer<typeof BackupsOverview>;

export const BACKUP_RUN_STATUSES = ["running", "succeeded", "failed"] as const;

/** One backup attempt as the tenant records it: `POST /admin/backup` answers one, `GET /admin/backups` lists them. */
export const TenantBackupRun = z.object({
  id: z.number().int(),
  status: z.enum(BACKUP_RUN_STATUSES),
  location: z.string(),
  format: BackupFormat,
  size_bytes: z.number().int().nonnegative().nullable(),
  sha256: z.string().nullable(),
  error: z.string().nullable(),
  started_at: z.string(),
  finished_at: z.string().nullable(),
  /** When the control plane accepted the report; null when it was not (or could not be) reported. */
  reported_at: z.string().nullable(),
});
export type TenantBackupRun = z.infer<typeof TenantBackupRun>;

/** `GET /admin/backups` on the tenant platform: the latest attempts, newest first. */
export const TenantBackupRunList = z.object({ backups: z.array(TenantBackupRun) });

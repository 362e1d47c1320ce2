/**
 * Database backups: on a timer, once per interval across replicas (an advisory lock, and the latest `backup_runs`
 * row saying whether one is due), or on demand, the tenant dumps its whole database (`pg_dump`, or the embedded
 * database's own dump), streams it to `s3://<bucket>/<prefix>/<slug>/<timestamp>.<ext>` as a multipart upload while
 * hashing it, records the attempt, and reports it to the control plane. A failure (no pg_dump, S3 refusing or
 * unreachable) is recorded and reported as failed; it never stops the tenant.
 */
import { createHash } from "node:crypto";
import { Transform } from "node:stream";
import { DeleteObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import {
  type BackupFormat,
  type BackupReportBody,
  DomainError,
  type S3Prefix,
  type TenantBackupRun,
} from "@molecule/contracts";
import { type BackupRunRow, backupRuns, type DatabaseDump, type DumpOptions } from "@molecule/db";
import type { ControlPlaneClient } from "@molecule/provisioner-core";
import { and, desc, eq, isNull, ne } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";

/** The tenant platform's backup lock key (its reconciler's is 74_201_321, its retention's 74_201_323). */
export const TENANT_BACKUP_LOCK = 74_201_324;

const EXTENSIONS: Record<BackupFormat, string> = {
  pg_dump_custom: ".dump",
  pg_dump_plain: ".sql",
  pglite_datadir_tgz: ".tar.gz",
};

/** Parts of 8 MiB, two in flight: what the upload holds in memory at most, whatever the dump's size. */
const PART_SIZE_BYTES = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT = 2;

export interface BackupSettings {
  target: S3Prefix;
  /** The folder under the prefix: the org's slug. */
  slug: string;
  /** What this database dumps as (decided by the driver and TENANT_BACKUP_FORMAT). */
  format: BackupFormat;
  dumpOptions: DumpOptions;
  /** TENANT_BACKUP_INTERVAL: a succeeded backup older than this makes the next one due. */
  intervalMs: number;
  /** After a failed attempt, the next is tried this much later (default: an hour, or the interval if shorter). */
  retryAfterMs?: number;
  /** How often each replica looks whether a backup is due (default: five minutes, or the interval if shorter). */
  checkEveryMs?: number;
  partSizeBytes?: number;
}

export interface BackupDeps {
  db: PlatformDeps["db"];
  advisoryLock: PlatformDeps["advisoryLock"];
  clock: PlatformDeps["clock"];
  logger: PlatformDeps["logger"];
  dump(options: DumpOptions): Promise<DatabaseDump>;
  s3: S3Client;
  /** The control plane's signed client and the path reports go to; null when there is no control plane. */
  report: { client: ControlPlaneClient; path: string } | null;
}

/** `2026-11-29T03-00-00-000Z`: a timestamp that sorts, with nothing a key or a shell would mind. */
function stamp(at: Date): string {
  return at.toISOString().replace(/[:.]/g, "-");
}

/** One line for the record and the report: no control characters, cut short. Never holds a credential. */
function reason(error: unknown): string {
  const named = error as { name?: unknown; message?: unknown };
  const message = typeof named.message === "string" && named.message ? named.message : String(error);
  const name = typeof named.name === "string" && named.name !== "Error" ? `${named.name}: ` : "";
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is taken out
  return `${name}${message}`.replace(/[\u0000-\u001f\u007f]+/g, " ").slice(0, 500);
}

export function backupRunView(row: BackupRunRow): TenantBackupRun {
  return {
    id: row.id,
    status: row.status as TenantBackupRun["status"],
    location: row.location,
    format: row.format as BackupFormat,
    size_bytes: row.sizeBytes,
    sha256: row.sha256,
    error: row.error,
    started_at: row.startedAt.toISOString(),
    finished_at: row.finishedAt?.toISOString() ?? null,
    reported_at: row.reportedAt?.toISOString() ?? null,
  };
}

export class TenantBackups {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  private upload: Upload | null = null;
  private stopping = false;

  constructor(
    private readonly deps: BackupDeps,
    private readonly settings: BackupSettings,
  ) {}

  private get retryAfterMs(): number {
    return this.settings.retryAfterMs ?? Math.min(this.settings.intervalMs, 3_600_000);
  }

  start(): void {
    const every = this.settings.checkEveryMs ?? Math.min(this.settings.intervalMs, 5 * 60_000);
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.runIfDue()
        .catch((error: unknown) => this.deps.logger.error({ err: error }, "backup check failed"))
        .finally(() => {
          this.running = null;
        });
    }, every);
  }

  /** Stops the timer; a backup in flight is abandoned (its upload aborted) and recorded as failed. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.upload?.abort().catch(() => {});
    await this.running;
  }

  /** The latest attempts, newest first. */
  async list(limit = 20): Promise<TenantBackupRun[]> {
    const rows = await this.deps.db
      .select()
      .from(backupRuns)
      .orderBy(desc(backupRuns.startedAt))
      .limit(limit);
    return rows.map(backupRunView);
  }

  /**
   * A backup if one is due (no succeeded one within the interval, and no failed attempt within the retry delay),
   * by whichever replica holds the lock; null when none was due or another replica holds it.
   */
  async runIfDue(): Promise<TenantBackupRun | null> {
    const outcome = await this.deps.advisoryLock(TENANT_BACKUP_LOCK, async () => {
      await this.reportPending();
      const now = this.deps.clock.now().getTime();
      const [latest] = await this.deps.db
        .select()
        .from(backupRuns)
        .orderBy(desc(backupRuns.startedAt))
        .limit(1);
      const [success] = await this.deps.db
        .select()
        .from(backupRuns)
        .where(eq(backupRuns.status, "succeeded"))
        .orderBy(desc(backupRuns.startedAt))
        .limit(1);
      const intervalOver = !success || now - success.startedAt.getTime() >= this.settings.intervalMs;
      const retryOver =
        !latest || latest.status === "succeeded" || now - latest.startedAt.getTime() >= this.retryAfterMs;
      return intervalOver && retryOver ? this.perform() : null;
    });
    return outcome.acquired ? outcome.value : null;
  }

  /** A backup now, whatever the schedule (`POST /admin/backup`); 409 while one runs. */
  async runNow(): Promise<TenantBackupRun> {
    const outcome = await this.deps.advisoryLock(TENANT_BACKUP_LOCK, () => this.perform());
    if (!outcome.acquired) throw new DomainError("conflict", "a backup is already running");
    return outcome.value;
  }

  private async perform(): Promise<TenantBackupRun> {
    const { db, clock, logger } = this.deps;
    // We hold the lock: a row still running was left by a process that stopped mid-backup.
    await db
      .update(backupRuns)
      .set({
        status: "failed",
        error: "abandoned: the process stopped before it finished",
        finishedAt: clock.now(),
      })
      .where(eq(backupRuns.status, "running"));
    const { target, slug, format } = this.settings;
    const startedAt = clock.now();
    const key = [target.keyPrefix, slug, `${stamp(startedAt)}${EXTENSIONS[format]}`]
      .filter(Boolean)
      .join("/");
    const location = `s3://${target.bucket}/${key}`;
    const [row] = await db
      .insert(backupRuns)
      .values({ status: "running", location, format, startedAt })
      .returning();
    if (!row) throw new Error("backup_runs insert returned no row");
    let finished: BackupRunRow;
    try {
      const { sizeBytes, sha256 } = await this.dumpAndUpload(key);
      [finished] = (await db
        .update(backupRuns)
        .set({ status: "succeeded", sizeBytes, sha256, finishedAt: clock.now() })
        .where(eq(backupRuns.id, row.id))
        .returning()) as [BackupRunRow];
      logger.info({ location, sizeBytes, sha256 }, "backup uploaded");
    } catch (error) {
      const why = this.stopping ? "stopped: the tenant shut down mid-backup" : reason(error);
      [finished] = (await db
        .update(backupRuns)
        .set({ status: "failed", error: `backup to ${location} failed: ${why}`, finishedAt: clock.now() })
        .where(eq(backupRuns.id, row.id))
        .returning()) as [BackupRunRow];
      logger.error({ location, error: why }, "backup failed");
    }
    return backupRunView(await this.report(finished));
  }

  /** Dumps and uploads, hashing on the way; the object is removed again when the dump turns out incomplete. */
  private async dumpAndUpload(key: string): Promise<{ sizeBytes: number; sha256: string }> {
    const { target, format } = this.settings;
    const dump = await this.deps.dump(this.settings.dumpOptions);
    if (dump.format !== format) {
      dump.cancel();
      throw new Error(`the database dumps as ${dump.format}, not ${format}`);
    }
    const hash = createHash("sha256");
    let sizeBytes = 0;
    const hashing = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        hash.update(chunk);
        sizeBytes += chunk.length;
        done(null, chunk);
      },
    });
    dump.stream.on("error", (error) => hashing.destroy(error));
    dump.stream.pipe(hashing);
    const upload = new Upload({
      client: this.deps.s3,
      params: {
        Bucket: target.bucket,
        Key: key,
        Body: hashing,
        ContentType: format === "pg_dump_plain" ? "application/sql" : "application/octet-stream",
        Metadata: { "molecule-format": format },
      },
      partSize: this.settings.partSizeBytes ?? PART_SIZE_BYTES,
      queueSize: PARTS_IN_FLIGHT,
      leavePartsOnError: false,
    });
    this.upload = upload;
    const uploaded = upload.done();
    try {
      await Promise.all([uploaded, dump.finished]);
    } catch (error) {
      dump.cancel();
      await upload.abort().catch(() => {});
      // A dump that failed after its last byte was uploaded left an incomplete object: it must not look like a backup.
      if (await uploaded.then(() => true).catch(() => false)) {
        await this.deps.s3.send(new DeleteObjectCommand({ Bucket: target.bucket, Key: key })).catch(() => {});
      }
      throw error;
    } finally {
      this.upload = null;
    }
    return { sizeBytes, sha256: hash.digest("hex") };
  }

  /**
   * Reports again the finished attempts whose report did not get through (the control plane was down), newest first,
   * a few per check: the control plane's view of a tenant's backups catches up once it answers.
   */
  private async reportPending(): Promise<void> {
    if (!this.deps.report) return;
    const pending = await this.deps.db
      .select()
      .from(backupRuns)
      .where(and(isNull(backupRuns.reportedAt), ne(backupRuns.status, "running")))
      .orderBy(desc(backupRuns.startedAt))
      .limit(5);
    for (const row of pending) {
      if ((await this.report(row)).reportedAt === null) return; // still unreachable: next check
    }
  }

  /** Sends the report; a failure to deliver it is logged, and the row keeps `reported_at` null. */
  private async report(row: BackupRunRow): Promise<BackupRunRow> {
    if (!this.deps.report) return row;
    const body: BackupReportBody = {
      slug: this.settings.slug,
      outcome: row.status === "succeeded" ? "succeeded" : "failed",
      location: row.location,
      format: row.format as BackupFormat,
      size_bytes: row.sizeBytes,
      sha256: row.sha256,
      started_at: row.startedAt.toISOString(),
      finished_at: (row.finishedAt ?? row.startedAt).toISOString(),
      ...(row.error ? { error: row.error.slice(0, 1000) } : {}),
    };
    try {
      await this.deps.report.client.call({
        op: "backup report",
        method: "POST",
        path: this.deps.report.path,
        body,
        maxAttempts: 3,
      });
    } catch (error) {
      this.deps.logger.warn({ location: row.location, error: reason(error) }, "could not report the backup");
      return row;
    }
    const [reported] = await this.deps.db
      .update(backupRuns)
      .set({ reportedAt: this.deps.clock.now() })
      .where(eq(backupRuns.id, row.id))
      .returning();
    return reported ?? row;
  }
}

/**
 * Builds the tenant's backups from its configuration: the S3 client (the configured key pair, else the AWS SDK's
 * default chain), the control plane's signed client for the reports, and the dump
 * format of the database it runs on.
 */
import { S3Client } from "@aws-sdk/client-s3";
import type { BackupFormat } from "@molecule/contracts";
import { type Database, findExecutable } from "@molecule/db";
import { ControlPlaneClient } from "@molecule/provisioner-core";
import type { TenantConfig } from "./config.ts";
import { type BackupDeps, TenantBackups } from "./services/backups.ts";

export type { TenantBackups };

import type { PlatformDeps } from "./services/deps.ts";

export type BackupConfig = NonNullable<TenantConfig["backups"]>;

export function buildS3Client(s3: BackupConfig["s3"]): S3Client {
  return new S3Client({
    region: s3.region,
    // An S3-compatible store (MinIO, a local emulator) is addressed by path, not by a bucket subdomain.
    ...(s3.endpoint ? { endpoint: s3.endpoint, forcePathStyle: true } : {}),
    ...(s3.credentials ? { credentials: s3.credentials } : {}),
  });
}

/** What the reports are signed with: the tenant's control-plane credential, sent to TENANT_BACKUP_REPORT_URL. */
function reportClient(config: TenantConfig, backups: BackupConfig, logger: PlatformDeps["logger"]) {
  const { tenantToken, signingKey } = config.controlPlane;
  if (!tenantToken || !signingKey) return null;
  const url = new URL(backups.reportUrl);
  return {
    client: new ControlPlaneClient({
      baseUrl: url.origin,
      tenantToken,
      signingKey,
      logger: logger.child({ component: "backups" }),
    }),
    path: `${url.pathname}${url.search}`,
  };
}

export function backupFormat(driver: Database["driver"], pgFormat: BackupConfig["pgFormat"]): BackupFormat {
  if (driver === "pglite") return "pglite_datadir_tgz";
  return pgFormat === "plain" ? "pg_dump_plain" : "pg_dump_custom";
}

/**
 * The tenant's backups, or null when TENANT_BACKUP_S3_PREFIX is empty. `slug` names its folder under the prefix (the
 * org's slug in controlplane mode). Reports are sent only by a tenant holding a control-plane credential.
 */
export function buildTenantBackups(
  config: TenantConfig,
  deps: Pick<PlatformDeps, "db" | "advisoryLock" | "clock" | "logger">,
  database: Pick<Database, "driver" | "dump">,
  slug: string,
  overrides: Partial<Pick<BackupDeps, "s3">> = {},
): TenantBackups | null {
  const backups = config.backups;
  if (!backups) return null;
  const format = backupFormat(database.driver, backups.pgFormat);
  if (database.driver === "postgres" && !findExecutable("pg_dump", backups.searchPath)) {
    deps.logger.error(
      "backups will fail: pg_dump was not found on PATH (install the PostgreSQL client programs, of the server's major version or newer)",
    );
  }
  return new TenantBackups(
    {
      ...deps,
      dump: (options) => database.dump(options),
      s3: overrides.s3 ?? buildS3Client(backups.s3),
      report: reportClient(config, backups, deps.logger),
    },
    {
      target: backups.target,
      slug,
      format,
      dumpOptions: { pgFormat: backups.pgFormat, searchPath: backups.searchPath },
      intervalMs: backups.intervalMs,
    },
  );
}

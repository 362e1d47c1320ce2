/** `molecule-cp backups`: every tenant's last backup through `GET /cp/admin/backups`, stale and failed ones flagged. */
import { BackupsOverview, type TenantBackupStatus } from "@molecule/contracts";
import { type Command, flag } from "./command.ts";
import { duration, json, table } from "./output.ts";

/** `4.0 KiB`, `1.2 GiB` */
function size(bytes: number | null | undefined): string | null {
  if (bytes === null || bytes === undefined) return null;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function flags(tenant: TenantBackupStatus): string {
  return [tenant.stale ? "STALE" : "", tenant.failed ? "FAILED" : ""].filter(Boolean).join(",");
}

const backups: Command = {
  name: ["backups"],
  synopsis: "[--check]",
  summary: "every tenant's last backup and last good one, stale and failed ones flagged",
  details: `  --check          exit 1 when any tenant's backups are stale or its last one failed (for monitoring)`,
  options: { check: { type: "boolean" } },
  async run(io, input) {
    const { data, raw } = await io.client.call("GET", "/cp/admin/backups", BackupsOverview);
    const problems = data.summary.stale + data.summary.failed > 0;
    if (io.json) {
      io.stdout(json(raw));
    } else {
      if (data.tenants.length > 0) {
        io.stdout(
          table(
            [
              { header: "SLUG", value: (t) => t.slug },
              { header: "ORG STATUS", value: (t) => t.org_status },
              { header: "LAST", value: (t) => t.last?.finished_at },
              { header: "OUTCOME", value: (t) => t.last?.outcome },
              { header: "LAST GOOD", value: (t) => t.last_success?.finished_at },
              { header: "SIZE", value: (t) => size(t.last_success?.size_bytes) },
              { header: "FLAGS", value: flags },
              { header: "LOCATION / ERROR", value: (t) => t.last?.error ?? t.last_success?.location },
            ],
            data.tenants,
          ),
        );
        io.stdout("\n");
      }
      const { tenants, stale, failed } = data.summary;
      io.stdout(
        `${tenants} tenant(s), ${stale} stale (no good backup within ${duration(data.stale_after_ms)}), ${failed} failed\n`,
      );
    }
    return flag(input, "check") && problems ? 1 : 0;
  },
};

export const BACKUP_COMMANDS: readonly Command[] = [backups];

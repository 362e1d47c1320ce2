/**
 * `molecule-cp reconcile` and `molecule-cp stats`: the reconciler's pass and the control plane's counters;
 * `molecule-cp openapi`: the API's OpenAPI document.
 */
import { AdminStats, type GhostClaim, type OrphanResource, ReconcileReport } from "@molecule/contracts";
import { z } from "zod";
import type { Command } from "./command.ts";
import { duration, json, keyValues, table } from "./output.ts";

function orphanTable(orphans: readonly OrphanResource[]): string {
  return table(
    [
      { header: "BACKEND", value: (o) => o.backend },
      { header: "KIND", value: (o) => o.kind },
      { header: "PROVIDER ID", value: (o) => o.provider_id },
      { header: "ORG", value: (o) => o.org_id },
      { header: "WORKSPACE", value: (o) => o.workspace_id },
      { header: "AGE", value: (o) => duration(o.age_ms) },
      { header: "DELETED", value: (o) => o.deleted },
    ],
    orphans,
  );
}

function ghostTable(ghosts: readonly GhostClaim[]): string {
  return table(
    [
      { header: "BACKEND", value: (g) => g.backend },
      { header: "SUBJECT", value: (g) => g.subject },
      { header: "ID", value: (g) => g.id },
      { header: "ORG", value: (g) => g.org_id },
      { header: "STATUS", value: (g) => g.status },
      { header: "ACTION", value: (g) => g.action },
      { header: "REASON", value: (g) => g.reason },
    ],
    ghosts,
  );
}

function countTable(title: string, counts: Record<string, number>): string {
  return table(
    [
      { header: title, value: ([key]) => key },
      { header: "RESOURCES", value: ([, count]) => count },
    ],
    Object.entries(counts),
  );
}

/** The orphan and ghost lists, each only when it has rows. */
function findings(orphans: readonly OrphanResource[], ghosts: readonly GhostClaim[]): string {
  return [
    orphans.length > 0 ? `\n${orphanTable(orphans)}` : "",
    ghosts.length > 0 ? `\n${ghostTable(ghosts)}` : "",
  ].join("");
}

const reconcile: Command = {
  name: ["reconcile"],
  summary: "one reconcile pass now: orphaned resources and ghost claims (409 while another replica runs one)",
  async run(io) {
    const { data, raw } = await io.client.call("POST", "/cp/admin/reconcile", ReconcileReport);
    if (io.json) {
      io.stdout(json(raw));
      return 0;
    }
    io.stdout(
      keyValues([
        ["at", data.at],
        ["replica", data.replica],
        ["took", duration(data.durationMs)],
        ["orphans", data.orphans],
        ["ghosts", data.ghosts],
        ["deleted", `${data.deleted}${data.deleteOrphans ? "" : " (RECONCILE_DELETE_ORPHANS is off)"}`],
        ["orphan grace", duration(data.orphanGraceMs)],
      ]),
    );
    io.stdout(findings(data.orphanList, data.ghostList));
    for (const error of data.errors) io.stdout(`\nbackend ${error.backend} not listed: ${error.message}\n`);
    return 0;
  },
};

const stats: Command = {
  name: ["stats"],
  summary: "operations by kind and status, hung operations, resources, and the last reconcile",
  async run(io) {
    const { data, raw } = await io.client.call("GET", "/cp/admin/stats", AdminStats);
    if (io.json) {
      io.stdout(json(raw));
      return 0;
    }
    const oldest = data.oldestRunning;
    const last = data.lastReconcile;
    io.stdout(
      keyValues([
        ["orphans", data.orphans],
        ["ghosts", data.ghosts],
        ["hung operations", data.hung],
        ["oldest running", oldest && `${oldest.id} ${oldest.kind}, ${duration(oldest.ageMs)}`],
        [
          "last reconcile",
          last &&
            `${last.at} by ${last.replica} (${duration(last.durationMs)}: ${last.orphans} orphans, ${last.ghosts} ghosts, ${last.deleted} deleted)`,
        ],
      ]),
    );
    const statuses = [
      ...new Set(Object.values(data.operations).flatMap((byStatus) => Object.keys(byStatus))),
    ];
    if (statuses.length > 0) {
      io.stdout(
        `\n${table(
          [
            { header: "OPERATIONS", value: ([kind]) => kind },
            ...statuses.sort().map((status) => ({
              header: status.toUpperCase(),
              value: ([, byStatus]: [string, Record<string, number>]) => byStatus[status] ?? 0,
            })),
          ],
          Object.entries(data.operations),
        )}`,
      );
    }
    if (Object.keys(data.resources.byBackend).length > 0) {
      io.stdout(`\n${countTable("BACKEND", data.resources.byBackend)}`);
      io.stdout(`\n${countTable("ORG", data.resources.byOrg)}`);
    }
    io.stdout(findings(data.orphanList, data.ghostList));
    return 0;
  },
};

/** Enough of an OpenAPI document to know the answer is one. */
const OpenApiAnswer = z.looseObject({
  openapi: z.string().startsWith("3."),
  paths: z.record(z.string(), z.unknown()),
});

const openapi: Command = {
  name: ["openapi"],
  summary: "the control plane's OpenAPI 3.1 document (GET /openapi.json), as JSON",
  async run(io) {
    const { raw } = await io.client.call("GET", "/openapi.json", OpenApiAnswer);
    io.stdout(json(raw));
    return 0;
  },
};

export const ADMIN_COMMANDS: readonly Command[] = [reconcile, stats, openapi];

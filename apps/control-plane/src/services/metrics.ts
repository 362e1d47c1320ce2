import type { Db } from "@molecule/db";
import {
  registerServiceState,
  ServiceMetrics,
  type ServiceMetricsOptions,
} from "@molecule/service-kit/metrics";
import { tableReconcileStore } from "@molecule/service-kit/reconcile-runs";
import { countOperations } from "@molecule/service-kit/stats";
import { count, sql } from "drizzle-orm";
import { cpOperations, cpOrgs, cpOrphanSightings, cpReconcileRuns, cpWorkspaces } from "../db/schema.ts";

/**
 * The control plane's metrics: service-kit's requests and operation attempts, and what it reads from its database at
 * each scrape (orgs by status, workspaces by state and backend, operation rows, the last reconcile pass).
 */
export function controlPlaneMetrics(db: Db, options: ServiceMetricsOptions = {}): ServiceMetrics {
  const metrics = new ServiceMetrics(options);
  const store = tableReconcileStore(db, { runs: cpReconcileRuns, sightings: cpOrphanSightings });
  registerServiceState(metrics, {
    operations: () => countOperations(db, cpOperations),
    lastReconcile: () => store.lastRun(),
  });
  metrics.scrapedGauge("molecule_orgs", "Orgs (tenants) by status", ["status"], async () => {
    const rows = await db.select({ status: cpOrgs.status, n: count() }).from(cpOrgs).groupBy(cpOrgs.status);
    return rows.map((row) => ({ labels: { status: row.status }, value: Number(row.n) }));
  });
  const backend = sql<string>`coalesce(${cpWorkspaces.handle}->>'backend', 'none')`;
  metrics.scrapedGauge(
    "molecule_workspaces",
    "Workspaces the control plane runs for tenants, by state and backend (none before a backend made anything)",
    ["status", "backend"],
    async () => {
      const rows = await db
        .select({ status: cpWorkspaces.state, backend, n: count() })
        .from(cpWorkspaces)
        .groupBy(cpWorkspaces.state, backend);
      return rows.map((row) => ({
        labels: { status: row.status, backend: row.backend },
        value: Number(row.n),
      }));
    },
  );
  return metrics;
}

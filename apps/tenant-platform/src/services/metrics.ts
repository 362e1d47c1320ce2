import { operations, workspaces } from "@molecule/db";
import { registerServiceState, type ServiceMetrics } from "@molecule/service-kit/metrics";
import type { Reconciler } from "@molecule/service-kit/reconcile";
import { countOperations } from "@molecule/service-kit/stats";
import { count } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";
import type { HeartbeatBatcher } from "./heartbeats.ts";
import type { PoolService } from "./pools.ts";

/**
 * The tenant platform's own series, beside service-kit's requests and operation attempts. A2A deliveries and
 * heartbeats are counted from the events this process publishes (not from the request path); workspaces, operations
 * and the last reconcile pass are read from the database at each scrape.
 */
export function instrumentPlatform(
  metrics: ServiceMetrics,
  deps: PlatformDeps,
  sources: { reconciler: Reconciler; heartbeats: HeartbeatBatcher | null; pools: Pick<PoolService, "list"> },
): void {
  registerServiceState(metrics, {
    operations: () => countOperations(deps.db, operations),
    lastReconcile: () => sources.reconciler.lastReport(),
  });
  metrics.scrapedGauge(
    "molecule_workspaces",
    "Workspaces by status and backend",
    ["status", "backend"],
    async () => {
      const rows = await deps.db
        .select({ status: workspaces.status, backend: workspaces.backend, n: count() })
        .from(workspaces)
        .groupBy(workspaces.status, workspaces.backend);
      return rows.map((row) => ({
        labels: { status: row.status, backend: row.backend },
        value: Number(row.n),
      }));
    },
  );
  metrics.scrapedGauge(
    "molecule_pool_target_size",
    "Warm pools: how many ready members each pool keeps (PUT /pools)",
    ["runtime", "tier"],
    async () =>
      (await sources.pools.list()).map((pool) => ({
        labels: { runtime: pool.runtime, tier: String(pool.tier) },
        value: pool.size,
      })),
  );
  metrics.scrapedGauge(
    "molecule_pool_members",
    "Warm pool members by state: ready (waiting for a claim), starting, claimed (a workspace now, not removed)",
    ["runtime", "tier", "state"],
    async () =>
      (await sources.pools.list()).flatMap((pool) =>
        (["ready", "starting", "claimed"] as const).map((state) => ({
          labels: { runtime: pool.runtime, tier: String(pool.tier), state },
          value: pool[state],
        })),
      ),
  );
  const { heartbeats } = sources;
  if (heartbeats) {
    metrics.gauge(
      "molecule_heartbeats_buffered",
      "Steady-state heartbeats answered and waiting for the next batch write",
      [],
      function () {
        this.set(heartbeats.buffered);
      },
    );
  }

  const recorded = metrics.counter(
    "molecule_heartbeats_recorded_total",
    "Heartbeats recorded: each one written at once, and one per workspace per batch write for batched ones",
  );
  const missed = metrics.counter(
    "molecule_heartbeats_missed_total",
    "Workspaces marked offline because their heartbeats stopped (liveness sweep)",
  );
  const a2aDuration = metrics.histogram(
    "molecule_a2a_upstream_duration_seconds",
    "A2A calls delivered through the proxy, by whether the answer was streamed: from sending to the target until its whole answer was relayed",
    ["streamed"],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  );
  const a2aBytes = metrics.counter(
    "molecule_a2a_response_bytes_total",
    "Bytes of A2A answers relayed from targets to callers",
    ["streamed"],
  );
  const wakeWait = metrics.histogram(
    "molecule_a2a_wake_wait_seconds",
    "A2A requests that found their target suspended or waking, by how the wait ended (woken, timeout, failed, caller_gone: the caller's connection closed first): how long each waited",
    ["outcome"],
    [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
  );
  // Bound once: a delivery is counted without making a label object.
  const byStreamed = {
    true: { duration: a2aDuration.labels("true"), bytes: a2aBytes.labels("true") },
    false: { duration: a2aDuration.labels("false"), bytes: a2aBytes.labels("false") },
  };
  deps.events.watchPublished((event) => {
    switch (event.type) {
      case "workspace.heartbeat":
        recorded.inc();
        return;
      case "workspace.heartbeat_missed":
        missed.inc();
        return;
      case "a2a.delivery": {
        const { durationMs, bytes, streamed } = event.data as {
          durationMs: number;
          bytes: number;
          streamed: boolean;
        };
        const series = streamed ? byStreamed.true : byStreamed.false;
        series.duration.observe(durationMs / 1000);
        series.bytes.inc(bytes);
        return;
      }
      case "a2a.wake_wait": {
        const { outcome, waitedMs } = event.data as { outcome: string; waitedMs: number };
        wakeWait.labels(outcome).observe(waitedMs / 1000);
        return;
      }
    }
  });
}

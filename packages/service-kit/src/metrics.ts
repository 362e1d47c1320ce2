/**
 * A service's Prometheus metrics (prom-client), on a registry of its own (never prom-client's global one): what both
 * services count the same way (requests, operations, the process) lives here, and each app adds its own series with
 * `counter`, `histogram` and `gauge`. Labels stay bounded: a request's route is the route pattern it matched
 * (`/workspaces/:id`, `/*` for no route), never its path.
 */
import { createServer, type Server } from "node:http";
import type { ReconcileReport } from "@molecule/contracts";
import type { Handler } from "hono";
import type { Logger } from "pino";
import {
  Counter,
  collectDefaultMetrics,
  Gauge,
  type GaugeConfiguration,
  Histogram,
  Registry,
} from "prom-client";

/** Seconds: from a fast in-memory answer (a heartbeat) to a slow upstream (an agent thinking). */
export const REQUEST_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Seconds: operations take from under a second (a stop) to many minutes (a VM and its image). */
export const OPERATION_BUCKETS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];

/**
 * How one attempt of an operation ended: `retrying` (a retryable failure, attempts left), `hung` (abandoned at its
 * deadline), `deferred` (waits for something else, no attempt used), `superseded` (its subject is going away: the
 * operation failed as such), `overtaken` (another runner took the row over; its attempt decides), `released` (given
 * back when the process stopped, no attempt used).
 */
export type AttemptOutcome =
  | "succeeded"
  | "failed"
  | "retrying"
  | "hung"
  | "deferred"
  | "superseded"
  | "overtaken"
  | "released";

/** What the operation runner reports to (the runner's deps carry it when metrics are on). */
export interface OperationMetrics {
  observeAttempt(kind: string, outcome: AttemptOutcome, seconds: number): void;
}

/** What the request log line reports to: the Hono middleware and the raw routes alike. */
export interface RequestMetrics {
  observeRequest(method: string, route: string, status: number, seconds: number): void;
}

export interface ServiceMetricsOptions {
  /** prom-client's process and Node.js series (CPU, memory, event loop lag, GC); `main()` turns them on. */
  processMetrics?: boolean;
}

interface Series {
  labels: Record<string, string>;
  /** Observations per bucket (not cumulative), the last one above every bound. */
  counts: number[];
  sum: number;
  count: number;
}

/**
 * A histogram for the per-request path. prom-client's own checks and hashes the label values on every observation
 * (about 0.8 µs a request here, bench/request-metrics.ts); this one finds its series by one Map lookup, adds plain
 * numbers, and builds the exposition only when the registry is scraped.
 */
class KeyedHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  private readonly series = new Map<string, Series>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
  ) {}

  /** `key` names the series; `labels` (its label values) are copied only the first time it is seen. */
  observe(key: string, labels: Readonly<Record<string, string>>, value: number): void {
    let series = this.series.get(key);
    if (!series) {
      series = { labels: { ...labels }, counts: new Array(this.bounds.length + 1).fill(0), sum: 0, count: 0 };
      this.series.set(key, series);
    }
    let bucket = 0;
    while (bucket < this.bounds.length && value > (this.bounds[bucket] as number)) bucket++;
    series.counts[bucket] = (series.counts[bucket] as number) + 1;
    series.sum += value;
    series.count += 1;
  }

  /** What prom-client's registry reads at a scrape. */
  get() {
    const values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> = [];
    for (const series of this.series.values()) {
      let cumulative = 0;
      series.counts.forEach((count, i) => {
        cumulative += count;
        const le = i < this.bounds.length ? (this.bounds[i] as number) : "+Inf";
        values.push({
          metricName: `${this.name}_bucket`,
          labels: { ...series.labels, le },
          value: cumulative,
        });
      });
      values.push({ metricName: `${this.name}_sum`, labels: series.labels, value: series.sum });
      values.push({ metricName: `${this.name}_count`, labels: series.labels, value: series.count });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    this.series.clear();
  }
}

export class ServiceMetrics implements RequestMetrics, OperationMetrics {
  readonly registry = new Registry();
  // Filled in place for each request; copied only when its series is new.
  private readonly requestLabels = { method: "", route: "", status: "" };
  private readonly requests = new KeyedHistogram(
    "molecule_http_request_duration_seconds",
    "HTTP requests by method, route pattern and status, with their duration until the answer was written",
    REQUEST_BUCKETS,
  );
  private readonly attempts: Histogram<"kind" | "outcome">;

  constructor(options: ServiceMetricsOptions = {}) {
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: "molecule_" });
    this.registry.registerMetric(this.requests as never);
    this.attempts = this.histogram(
      "molecule_operation_attempt_duration_seconds",
      "Attempts of durable operations by kind and how each ended, with their duration",
      ["kind", "outcome"],
      OPERATION_BUCKETS,
    );
  }

  observeRequest(method: string, route: string, status: number, seconds: number): void {
    const labels = this.requestLabels;
    labels.method = method;
    labels.route = route;
    labels.status = String(status);
    this.requests.observe(`${method} ${status} ${route}`, labels, seconds);
  }

  observeAttempt(kind: string, outcome: AttemptOutcome, seconds: number): void {
    this.attempts.labels(kind, outcome).observe(seconds);
  }

  counter<L extends string>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  histogram<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    buckets: number[],
  ): Histogram<L> {
    return new Histogram({ name, help, labelNames, buckets, registers: [this.registry] });
  }

  /** A gauge; `collect` (set its values there) runs at each scrape, so nothing is kept up to date in between. */
  gauge<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    collect?: GaugeConfiguration<L>["collect"],
  ): Gauge<L> {
    return new Gauge({ name, help, labelNames, registers: [this.registry], ...(collect ? { collect } : {}) });
  }

  /**
   * A gauge whose series are all read at each scrape by `load` (one grouped query): the series it no longer returns
   * are dropped, so a status nothing is in any more disappears rather than keeping its last value.
   */
  scrapedGauge<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    load: () => Promise<ReadonlyArray<{ labels: Record<L, string>; value: number }>>,
  ): Gauge<L> {
    return this.gauge(name, help, labelNames, async function (this: Gauge<L>) {
      const rows = await load();
      this.reset();
      for (const row of rows) this.set(row.labels as never, row.value);
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text. A gauge whose collection fails (the database is down) fails the scrape. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}

/** `GET /metrics` on the service's own port (each app puts its admin check in front). */
export function metricsHandler(metrics: ServiceMetrics): Handler {
  return async (c) => c.body(await metrics.text(), 200, { "content-type": metrics.contentType });
}

/**
 * `METRICS_PORT`: `GET /metrics` without authentication on its own server, bound to `host` (METRICS_HOST; loopback by
 * default: a sidecar sharing the network namespace or a node-local agent scrapes it, nothing else can reach it).
 * Resolves once listening.
 */
export function serveMetrics(
  metrics: ServiceMetrics,
  port: number,
  logger: Logger,
  host = "127.0.0.1",
): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" || path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("only GET /metrics is served here\n");
      return;
    }
    metrics.text().then(
      (text) => res.writeHead(200, { "content-type": metrics.contentType }).end(text),
      (error: unknown) => {
        logger.error({ err: error }, "metrics collection failed");
        res.writeHead(500, { "content-type": "text/plain" }).end("metrics collection failed\n");
      },
    );
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve(server);
    });
  });
}

/** Where both services' scrape-time gauges read from. */
export interface ServiceStateSources {
  /** Operation rows by kind and status (service-kit/stats `countOperations` on the service's table). */
  operations: () => Promise<ReadonlyArray<{ kind: string; status: string; count: number }>>;
  /** The newest reconcile pass any replica recorded (the reconciler's `lastReport`). */
  lastReconcile: () => Promise<ReconcileReport | null>;
}

/**
 * The series both services read from their database at each scrape: operation rows by kind and status, and what the
 * last reconcile pass found (orphans, ghosts, resources by backend, and when it ran).
 */
export function registerServiceState(metrics: ServiceMetrics, sources: ServiceStateSources): void {
  metrics.scrapedGauge(
    "molecule_operations",
    "Durable operation rows by kind and status (pending, running, succeeded, failed)",
    ["kind", "status"],
    async () =>
      (await sources.operations()).map((row) => ({
        labels: { kind: row.kind, status: row.status },
        value: row.count,
      })),
  );
  // One read of the last pass per scrape, shared by its gauges.
  let lastPass: Promise<ReconcileReport | null> | null = null;
  const pass = () => {
    lastPass ??= sources.lastReconcile().finally(() => {
      lastPass = null;
    });
    return lastPass;
  };
  metrics.gauge(
    "molecule_reconcile_orphans",
    "Unclaimed resources the last reconcile pass found",
    [],
    async function () {
      this.set((await pass())?.orphans ?? 0);
    },
  );
  metrics.gauge(
    "molecule_reconcile_ghosts",
    "Claims without a resource the last reconcile pass found",
    [],
    async function () {
      this.set((await pass())?.ghosts ?? 0);
    },
  );
  metrics.gauge(
    "molecule_reconcile_last_run_timestamp_seconds",
    "When the last reconcile pass ran (0 before the first)",
    [],
    async function () {
      const report = await pass();
      this.set(report ? Date.parse(report.at) / 1000 : 0);
    },
  );
  metrics.scrapedGauge(
    "molecule_reconcile_resources",
    "Live resources of this deployment by backend, as the last reconcile pass listed them",
    ["backend"],
    async () =>
      Object.entries((await pass())?.resources.byBackend ?? {}).map(([backend, value]) => ({
        labels: { backend },
        value,
      })),
  );
}

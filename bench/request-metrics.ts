/**
 * What counting a request costs on the hot path: service-kit's `logRequest` (the one place both the Hono middleware
 * and the raw routes write the request line and record the request metrics) for a successful heartbeat (a quiet route,
 * logged at debug, so with the logger at info nothing is written), with and without a `ServiceMetrics`, in the same
 * run, alternating in ABBA blocks so machine noise hits both. Prints nanoseconds per request for each and the
 * difference, which is what metrics add to every request (compare it with the platform's CPU per heartbeat in
 * README.md).
 *
 *   pnpm exec tsx bench/request-metrics.ts      BENCH_CALLS=1000000 (per block)  BENCH_BLOCKS=8
 */
import { Writable } from "node:stream";
import { logRequest } from "@molecule/service-kit/http";
import { ServiceMetrics } from "@molecule/service-kit/metrics";
import pino from "pino";
import { envNumber, machine } from "./lib.ts";

const calls = envNumber("BENCH_CALLS", 1_000_000);
const blocks = envNumber("BENCH_BLOCKS", 8);
const logger = pino({ level: "info" }, new Writable({ write: (_chunk, _encoding, done) => done() }));
const metrics = new ServiceMetrics({ processMetrics: true });
// A few routes and statuses already seen, as in a running platform.
for (const route of ["/workspaces/:id", "/workspaces/:id/a2a", "/events", "/*"]) {
  for (const status of [200, 401, 404]) metrics.observeRequest("GET", route, status, 0.001);
}

function block(withMetrics: boolean): number {
  const line = {
    requestId: "req_0123456789abcdef",
    method: "POST",
    route: "/registry/heartbeat",
    status: 200,
    started: 0,
  };
  const target = withMetrics ? metrics : undefined;
  const started = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) {
    line.started = performance.now();
    logRequest(logger, line, true, target);
  }
  return Number(process.hrtime.bigint() - started) / calls;
}

block(true);
block(false); // warm-up
const times = { with: [] as number[], without: [] as number[] };
for (let i = 0; i < blocks; i++) {
  const order = i % 2 === 0 ? [false, true, true, false] : [true, false, false, true];
  for (const withMetrics of order) (withMetrics ? times.with : times.without).push(block(withMetrics));
}
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;
const without = median(times.without);
const withMetrics = median(times.with);
console.log(machine());
console.log(
  `request line only:      ${without.toFixed(0)} ns per request (median of ${times.without.length} blocks of ${calls})`,
);
console.log(`request line + metrics: ${withMetrics.toFixed(0)} ns per request`);
console.log(`metrics add:            ${(withMetrics - without).toFixed(0)} ns per request`);

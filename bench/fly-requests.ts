/**
 * Fly API requests per provision and per destroy, and the platform's own time per provision beyond the
 * emulator's injected boot delay. Loopback only (an emulator on 127.0.0.1), bounded to a few seconds.
 *
 *   pnpm exec tsx bench/fly-requests.ts
 */
import { startFlyEmulator } from "../packages/fly-emulator/src/index.ts";
import { createFlyProvisioner } from "../packages/provisioner-core/src/flyio/index.ts";
import type { WorkspaceSpec } from "../packages/provisioner-core/src/provisioner.ts";

const RUNS = Number(process.env.BENCH_RUNS ?? 20);
const BOOT_MS = 50;
const APP = "bench-app";
const TOKEN = "bench-token";

const emulator = await startFlyEmulator({
  token: TOKEN,
  apps: [APP],
  delays: { bootMs: BOOT_MS, resumeMs: 5, stopMs: 10, suspendMs: 10, destroyMs: 10 },
});
const provisioner = createFlyProvisioner({
  apiToken: TOKEN,
  app: APP,
  region: "ord",
  baseUrl: emulator.url,
  deployment: "bench",
  imagePrefix: "registry.fly.io/molecule-",
  imageTag: "bench",
  waitDeadlineMs: 30_000,
});

function spec(i: number): WorkspaceSpec {
  return {
    workspaceId: `ws_01jbench${String(i).padStart(18, "0")}`,
    orgId: "org_01jbench000000000000000000",
    deployment: "bench",
    runtime: "hermes",
    tier: 2,
    env: { WORKSPACE_BOOT_TOKEN: "t" },
    secretKeys: ["WORKSPACE_BOOT_TOKEN"],
    metadata: {},
  };
}

function total(counts: Record<string, number>): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

const started = Date.now();
const provisionMs: number[] = [];
const destroyMs: number[] = [];
let provisionCounts: Record<string, number> = {};
let destroyCounts: Record<string, number> = {};
for (let i = 0; i < RUNS && Date.now() - started < 40_000; i++) {
  const s = spec(i);
  emulator.resetCounts();
  let t = performance.now();
  const handle = await provisioner.provision(s, null);
  provisionMs.push(performance.now() - t);
  provisionCounts = emulator.requestCounts();
  emulator.resetCounts();
  t = performance.now();
  await provisioner.destroy({ workspaceId: s.workspaceId, orgId: s.orgId, handle });
  destroyMs.push(performance.now() - t);
  destroyCounts = emulator.requestCounts();
}
await emulator.close();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const p95 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.95)] ?? 0;
const fmt = (n: number) => n.toFixed(1);

console.log(
  `Fly backend against the emulator, ${provisionMs.length} runs, injected boot delay ${BOOT_MS} ms\n`,
);
console.log("| measure | value |");
console.log("|---|---|");
console.log(`| requests per provision | ${total(provisionCounts)} (${JSON.stringify(provisionCounts)}) |`);
console.log(`| requests per destroy | ${total(destroyCounts)} (${JSON.stringify(destroyCounts)}) |`);
console.log(`| provision median / p95 (ms) | ${fmt(median(provisionMs))} / ${fmt(p95(provisionMs))} |`);
console.log(`| platform overhead per provision, median (ms) | ${fmt(median(provisionMs) - BOOT_MS)} |`);
console.log(`| provision time / injected delay (ratio) | ${(median(provisionMs) / BOOT_MS).toFixed(2)} |`);
console.log(`| destroy median (ms, injected ${10}) | ${fmt(median(destroyMs))} |`);

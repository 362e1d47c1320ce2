/**
 * AWS calls per EC2 workspace provision and per destroy, and the time the platform's own code takes beyond moto's
 * and beyond the waits it chose. The EC2 provisioner runs in this process against the fault and fidelity proxy in
 * front of moto (@molecule/aws-emulator), so the calls are those a run against AWS makes, including the polls while
 * a new instance is still invisible (NotFound window) and while a terminated one is `shutting-down`. Loopback only.
 *
 *   pnpm exec tsx bench/aws-calls.ts
 *
 * Env: BENCH_N (workspaces, default 10), BENCH_SHUTTING_DOWN_MS (default 200), BENCH_NOT_FOUND_MS (default 100).
 */
import { performance } from "node:perf_hooks";
import { type AwsEmulator, startAwsEmulator } from "../packages/aws-emulator/src/index.ts";
import { AwsAccess } from "../packages/provisioner-core/src/ec2/aws.ts";
import { createEc2Provisioner } from "../packages/provisioner-core/src/ec2/provisioner.ts";
import {
  createNetwork,
  makeWorkspaceSpec,
  TEST_CREDENTIALS,
  TEST_REGION,
  testProvisionerOptions,
} from "../packages/provisioner-core/src/ec2/testkit.ts";
import type { Handle } from "../packages/provisioner-core/src/provisioner.ts";
import { envNumber, machine, runBench, summarize } from "./lib.ts";

const N = envNumber("BENCH_N", 10);
const SHUTTING_DOWN_MS = envNumber("BENCH_SHUTTING_DOWN_MS", 200);
const NOT_FOUND_MS = envNumber("BENCH_NOT_FOUND_MS", 100);

interface Sample {
  wallMs: number;
  motoMs: number;
  /** In the proxy, moto's time included. */
  proxyMs: number;
  sleptMs: number;
  counts: Record<string, number>;
}

let aws: AwsEmulator | null = null;
let access: AwsAccess | null = null;

async function main(): Promise<void> {
  aws = await startAwsEmulator({ timing: { shuttingDownMs: SHUTTING_DOWN_MS, notFoundMs: NOT_FOUND_MS } });
  const net = await createNetwork(aws.endpoint, "bench");
  let sleptMs = 0;
  // The provisioner's own schedule (state polls, backoff), unshortened; only added up.
  access = new AwsAccess({
    region: TEST_REGION,
    endpoint: aws.endpoint,
    credentials: TEST_CREDENTIALS,
    sleep: (ms) => {
      sleptMs += ms;
      return new Promise((resolve) => setTimeout(resolve, ms));
    },
  });
  const provisioner = createEc2Provisioner(testProvisionerOptions(net, access));

  const measure = async (run: () => Promise<unknown>): Promise<Sample> => {
    const emulator = aws as AwsEmulator;
    emulator.resetCounts();
    sleptMs = 0;
    const started = performance.now();
    await run();
    return {
      wallMs: performance.now() - started,
      motoMs: emulator.motoTimeMs(),
      proxyMs: emulator.handlingTimeMs(),
      sleptMs,
      counts: emulator.counts(),
    };
  };

  const provisions: Sample[] = [];
  const destroys: Sample[] = [];
  for (let i = 0; i < N; i++) {
    const spec = makeWorkspaceSpec({ runtime: "echo" });
    let handle: Handle | null = null;
    provisions.push(
      await measure(async () => {
        handle = await provisioner.provision(spec, null, { operationId: `op_bench_${i}` });
      }),
    );
    destroys.push(
      await measure(() => provisioner.destroy({ workspaceId: spec.workspaceId, orgId: spec.orgId, handle })),
    );
  }

  console.log(
    `EC2 workspace backend through the proxy in front of moto 5.2.3, ${N} workspaces provisioned and destroyed one ` +
      `at a time; shutting-down ${SHUTTING_DOWN_MS} ms, NotFound window ${NOT_FOUND_MS} ms\n${machine()}\n`,
  );
  for (const [label, samples] of [
    ["provision", provisions],
    ["destroy", destroys],
  ] as const) {
    console.log(`AWS calls per ${label} (mean of ${samples.length}; min–max when they differ)`);
    console.log("| action | calls |");
    console.log("|---|---|");
    const actions = [...new Set(samples.flatMap((s) => Object.keys(s.counts)))].sort();
    for (const action of [...actions, "total"]) {
      const per = samples.map((s) =>
        action === "total" ? Object.values(s.counts).reduce((a, b) => a + b, 0) : (s.counts[action] ?? 0),
      );
      const min = Math.min(...per);
      const max = Math.max(...per);
      const mean = per.reduce((a, b) => a + b, 0) / per.length;
      console.log(`| ${action} | ${mean.toFixed(1)}${min === max ? "" : ` (${min}–${max})`} |`);
    }
    console.log("");
  }
  console.log(
    "Time per operation (ms): wall = moto + proxy (its own handling) + waits (the provisioner's sleeps) + ours " +
      "(the provisioner's code, the AWS SDK, loopback HTTP)",
  );
  console.log(
    "| operation | wall p50 | moto p50 | proxy p50 | waits p50 | ours p50 | ours mean | ours p99 |",
  );
  console.log("|---|---|---|---|---|---|---|---|");
  for (const [label, samples] of [
    ["provision", provisions],
    ["destroy", destroys],
  ] as const) {
    const p50 = (pick: (s: Sample) => number) => summarize(samples.map(pick)).p50.toFixed(1);
    const ours = summarize(samples.map((s) => s.wallMs - s.proxyMs - s.sleptMs));
    const f = (n: number) => n.toFixed(1);
    console.log(
      `| ${label} | ${p50((s) => s.wallMs)} | ${p50((s) => s.motoMs)} | ${p50((s) => s.proxyMs - s.motoMs)} | ` +
        `${p50((s) => s.sleptMs)} | ${f(ours.p50)} | ${f(ours.mean)} | ${f(ours.p99)} |`,
    );
  }
}

await runBench(main, {
  hardLimitMs: 300_000,
  cleanup: async () => {
    access?.destroy();
    await aws?.close();
  },
});

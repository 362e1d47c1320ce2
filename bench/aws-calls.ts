/**
 * AWS calls per EC2 tenant and workspace provision and destroy, and the time the platform's own code takes beyond
 * moto's, the proxy's and the waits it chose. The control plane's EC2 tenant backend and the EC2 workspace
 * provisioner run in this process against the fault and fidelity proxy in front of moto (@molecule/aws-emulator),
 * so the calls are those a run against AWS makes, including the polls while a new instance is still invisible
 * (NotFound window) and while a terminated one is `shutting-down`. Loopback only.
 *
 *   pnpm exec tsx bench/aws-calls.ts
 *
 * Each of N orgs in turn: its tenant is provisioned, then one workspace, the workspace is destroyed, then the tenant.
 * Env: BENCH_N (orgs, default 10), BENCH_SHUTTING_DOWN_MS (default 200), BENCH_NOT_FOUND_MS (default 100).
 */

import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { createEc2TenantBackend } from "../apps/control-plane/src/tenants/ec2.ts";
import { type AwsEmulator, startAwsEmulator } from "../packages/aws-emulator/src/index.ts";
import { AwsAccess } from "../packages/provisioner-core/src/ec2/aws.ts";
import { createEc2Provisioner } from "../packages/provisioner-core/src/ec2/provisioner.ts";
import {
  createNetwork,
  makeWorkspaceSpec,
  TEST_CREDENTIALS,
  TEST_REGION,
  TEST_SCOPE,
  testProvisionerOptions,
} from "../packages/provisioner-core/src/ec2/testkit.ts";
import type { Handle } from "../packages/provisioner-core/src/provisioner.ts";
import { envNumber, machine, runBench, summarize } from "./lib.ts";

const N = envNumber("BENCH_N", 10);
const SHUTTING_DOWN_MS = envNumber("BENCH_SHUTTING_DOWN_MS", 200);
const NOT_FOUND_MS = envNumber("BENCH_NOT_FOUND_MS", 100);
const OPERATIONS = [
  "tenant provision",
  "workspace provision",
  "workspace destroy",
  "tenant destroy",
] as const;
type Operation = (typeof OPERATIONS)[number];

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
  const emulator = aws;
  const net = await createNetwork(emulator.endpoint, "bench");
  let sleptMs = 0;
  // The code's own schedule (state polls, backoff), unshortened; only added up.
  access = new AwsAccess({
    region: TEST_REGION,
    endpoint: emulator.endpoint,
    credentials: TEST_CREDENTIALS,
    sleep: (ms) => {
      sleptMs += ms;
      return new Promise((resolve) => setTimeout(resolve, ms));
    },
  });
  const provisioner = createEc2Provisioner(testProvisionerOptions(net, access));
  const tenants = createEc2TenantBackend({
    scope: TEST_SCOPE,
    primary: {
      name: "primary",
      access,
      subnetId: net.subnetId,
      vpcId: net.vpcId,
      eicEndpointSgId: net.eicGroupId,
      ingressSgIds: [net.tenantGroupId],
    },
    amiFor: async () => ({ amiId: net.imageId, source: "EC2_AMI" }),
    image: "ghcr.io/molecule/tenant-platform:bench",
    canaryImage: "ghcr.io/molecule/tenant-platform:bench-canary",
    instanceProfile: net.instanceProfile,
    instanceType: "t3.small",
    admitOrgWorkspaces: true,
    waitDeadlineMs: 30_000,
    terminateDeadlineMs: 30_000,
  });

  const samples = new Map<Operation, Sample[]>(OPERATIONS.map((op) => [op, []]));
  const measure = async <T>(operation: Operation, run: () => Promise<T>): Promise<T> => {
    emulator.resetCounts();
    sleptMs = 0;
    const started = performance.now();
    const result = await run();
    samples.get(operation)?.push({
      wallMs: performance.now() - started,
      motoMs: emulator.motoTimeMs(),
      proxyMs: emulator.handlingTimeMs(),
      sleptMs,
      counts: emulator.counts(),
    });
    return result;
  };

  for (let i = 0; i < N; i++) {
    const orgId = `org_01jbench${String(i).padStart(18, "0")}`;
    const slug = `bench-${i}`;
    const tenant = await measure("tenant provision", () =>
      tenants.provision(
        {
          orgId,
          slug,
          deployment: TEST_SCOPE.deployment,
          env: { MOLECULE_ORG_ID: orgId, ADMIN_TOKEN: randomBytes(16).toString("hex") },
          secretKeys: ["ADMIN_TOKEN"],
          isCanary: false,
        },
        null,
        { operationId: `op_bench_tenant_${i}` },
      ),
    );
    const spec = makeWorkspaceSpec({ orgId, runtime: "echo" });
    const handle: Handle = await measure("workspace provision", () =>
      provisioner.provision(spec, null, { operationId: `op_bench_ws_${i}` }),
    );
    await measure("workspace destroy", () =>
      provisioner.destroy({ workspaceId: spec.workspaceId, orgId, handle }),
    );
    await measure("tenant destroy", () => tenants.destroy({ orgId, slug, handle: tenant.handle }));
  }

  console.log(
    `EC2 tenant backend and workspace provisioner through the proxy in front of moto 5.2.3, ${N} orgs one at a ` +
      `time; shutting-down ${SHUTTING_DOWN_MS} ms, NotFound window ${NOT_FOUND_MS} ms\n${machine()}\n`,
  );
  const actions = [
    ...new Set([...samples.values()].flatMap((list) => list.flatMap((s) => Object.keys(s.counts)))),
  ].sort();
  console.log(`AWS calls per operation (mean of ${N}; min–max when they differ)`);
  console.log(`| action | ${OPERATIONS.join(" | ")} |`);
  console.log(`|---|${OPERATIONS.map(() => "---").join("|")}|`);
  for (const action of [...actions, "total"]) {
    const cells = OPERATIONS.map((op) => {
      const per = (samples.get(op) ?? []).map((s) =>
        action === "total" ? Object.values(s.counts).reduce((a, b) => a + b, 0) : (s.counts[action] ?? 0),
      );
      const min = Math.min(...per);
      const max = Math.max(...per);
      const mean = per.reduce((a, b) => a + b, 0) / per.length;
      if (max === 0) return "";
      return `${mean.toFixed(1)}${min === max ? "" : ` (${min}–${max})`}`;
    });
    console.log(`| ${action} | ${cells.join(" | ")} |`);
  }
  console.log("");
  console.log(
    "Time per operation (ms): wall = moto + proxy (its own handling) + waits (the code's sleeps: state polls, " +
      "backoff) + ours (the backend's code, the AWS SDK, loopback HTTP)",
  );
  console.log(
    "| operation | wall p50 | moto p50 | proxy p50 | waits p50 | ours p50 | ours mean | ours p99 |",
  );
  console.log("|---|---|---|---|---|---|---|---|");
  for (const op of OPERATIONS) {
    const list = samples.get(op) ?? [];
    const p50 = (pick: (s: Sample) => number) => summarize(list.map(pick)).p50.toFixed(1);
    const ours = summarize(list.map((s) => s.wallMs - s.proxyMs - s.sleptMs));
    const f = (n: number) => n.toFixed(1);
    console.log(
      `| ${op} | ${p50((s) => s.wallMs)} | ${p50((s) => s.motoMs)} | ${p50((s) => s.proxyMs - s.motoMs)} | ` +
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

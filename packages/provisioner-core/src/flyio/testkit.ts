/**
 * Test wiring: the Fly backend against a fresh emulator on 127.0.0.1, every exchange validated against the
 * official OpenAPI document. Kept out of the package's exports; tests and the benchmark import it by path.
 */

import {
  type FlyEmulator,
  type FlyEmulatorOptions,
  OpenApiValidator,
  startFlyEmulator,
} from "@molecule/fly-emulator";
import type { WorkspaceSpec } from "../provisioner.ts";
import { createFlyProvisioner, type FlyProvisioner, type FlyProvisionerOptions } from "./provisioner.ts";

export const TEST_APP = "molecule-ws-test";
export const TEST_DEPLOYMENT = "test-deployment";
const TOKEN = "fly-test-token";

let validator: OpenApiValidator | null = null;
export function openApiValidator(): OpenApiValidator {
  validator ??= OpenApiValidator.fromFile();
  return validator;
}

export interface FlyHarness {
  emulator: FlyEmulator;
  provisioner: FlyProvisioner;
  /** Delays the backend asked for (sleep is recorded, then shortened to at most 5 ms). */
  sleeps: number[];
  makeSpec(overrides?: Partial<WorkspaceSpec>): WorkspaceSpec;
  close(): Promise<void>;
}

let seq = 0;

export async function startFlyHarness(
  options: {
    emulator?: FlyEmulatorOptions;
    provisioner?: Partial<FlyProvisionerOptions>;
    realSleep?: boolean;
  } = {},
): Promise<FlyHarness> {
  const emulator = await startFlyEmulator({
    token: TOKEN,
    apps: [TEST_APP],
    validator: openApiValidator(),
    delays: { bootMs: 6, resumeMs: 2, stopMs: 3, suspendMs: 3, destroyMs: 3 },
    ...options.emulator,
  });
  const sleeps: number[] = [];
  const provisioner = createFlyProvisioner({
    apiToken: TOKEN,
    app: TEST_APP,
    region: "ord",
    baseUrl: emulator.url,
    deployment: TEST_DEPLOYMENT,
    imagePrefix: "registry.fly.io/molecule-",
    imageTag: "test",
    waitDeadlineMs: 10_000,
    requestTimeoutMs: 2_000,
    leaseWaitMs: 1_000,
    retry: { maxAttempts: 5, baseDelayMs: 2, maxDelayMs: 20, maxElapsedMs: 5_000 },
    sleep: (ms) => {
      sleeps.push(ms);
      return new Promise((resolve) => setTimeout(resolve, options.realSleep ? ms : Math.min(ms, 5)));
    },
    ...options.provisioner,
  });
  return {
    emulator,
    provisioner,
    sleeps,
    makeSpec(overrides = {}) {
      seq += 1;
      const suffix = String(seq).padStart(6, "0");
      return {
        workspaceId: `ws_01jflytest0000000000${suffix}`.slice(0, 29),
        orgId: "org_01jflytest00000000000000000",
        deployment: TEST_DEPLOYMENT,
        runtime: "hermes",
        tier: 2,
        env: { WORKSPACE_ID: overrides.workspaceId ?? "x", WORKSPACE_BOOT_TOKEN: "boot-secret" },
        secretKeys: ["WORKSPACE_BOOT_TOKEN"],
        metadata: {},
        ...overrides,
      };
    },
    close: () => emulator.close(),
  };
}

import { defineConfig } from "vitest/config";

/**
 * Tests that need neither PostgreSQL nor a Docker engine (`pnpm test:unit`): listed here by path, so a new test
 * file is an integration test (with the peers checked and the template database and images ready) until it is
 * added to this list. A file listed here that reaches for the peers fails `pnpm test:unit` without them.
 */
export const UNIT_TESTS = [
  "apps/control-plane/src/config.test.ts",
  "apps/control-plane/src/tenants/names.test.ts",
  "apps/tenant-platform/src/canvas/routes.test.ts",
  "apps/tenant-platform/src/config.test.ts",
  "apps/tenant-platform/src/services/transitions.test.ts",
  "packages/agent-sdk/src/a2a-interop.test.ts",
  "packages/agent-sdk/src/a2a-reference.test.ts",
  "packages/agent-sdk/src/a2a-server.test.ts",
  "packages/agent-sdk/src/agent.test.ts",
  "packages/agent-sdk/src/boot-config.test.ts",
  "packages/agent-sdk/src/cli.test.ts",
  "packages/agent-sdk/src/client.test.ts",
  "packages/agent-sdk/src/credentials.test.ts",
  "packages/agent-sdk/src/echo-agent.test.ts",
  "packages/agent-sdk/src/echo-config.test.ts",
  "packages/agent-sdk/src/echo.test.ts",
  "packages/agent-sdk/src/heartbeat.test.ts",
  "packages/agent-sdk/src/task-store.test.ts",
  "packages/contracts/src/**/*.test.ts",
  "packages/db/src/data-dir.test.ts",
  "packages/fly-emulator/src/**/*.test.ts",
  "packages/identity/src/**/*.test.ts",
  "packages/provisioner-core/src/controlplane/*.test.ts",
  "packages/provisioner-core/src/docker/client.test.ts",
  "packages/provisioner-core/src/fake.test.ts",
  "packages/provisioner-core/src/flyio/*.test.ts",
  "packages/provisioner-core/src/scrub.test.ts",
  "packages/provisioner-core/src/select.test.ts",
  "packages/service-kit/src/config.test.ts",
  "packages/service-kit/src/http/*.test.ts",
  "packages/service-kit/src/operations.test.ts",
  "packages/service-kit/src/rate-limit.test.ts",
];

/** Everything else beside the code: real PostgreSQL (a database per file) and, for some, the Docker engine. */
const PACKAGE_TESTS = ["apps/*/src/**/*.test.ts", "packages/*/src/**/*.test.ts"];

/** Checks the peers, migrates the template database and builds the images, once per run. */
const PEERS = ["test-support/global-setup.ts"];

export default defineConfig({
  test: {
    pool: "forks",
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 60_000,
    hookTimeout: 180_000,
    reporters: ["default"],
    projects: [
      { extends: true, test: { name: "unit", include: UNIT_TESTS } },
      {
        extends: true,
        test: {
          name: "integration",
          include: PACKAGE_TESTS,
          exclude: ["**/node_modules/**", ...UNIT_TESTS],
          globalSetup: PEERS,
        },
      },
      { extends: true, test: { name: "e2e", include: ["e2e/**/*.test.ts"], globalSetup: PEERS } },
    ],
  },
});

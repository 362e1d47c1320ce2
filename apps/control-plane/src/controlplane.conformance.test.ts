import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { deriveTenantSigningKey } from "@molecule/identity";
import {
  ControlPlaneClient,
  createControlPlaneProvisioner,
  fetchTenantConfig,
  ProvisionerError,
  postBootEvent,
} from "@molecule/provisioner-core";
import { describeProvisioner } from "@molecule/provisioner-core/conformance";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { expect } from "vitest";
import { createApp, createOperationRunner } from "./app.ts";
import { createTestControlPlane, realClock, SHARED_SECRET } from "./testing.ts";

// The tenant side's controlplane backend (provisioner-core) against this service over real HTTP: the shared
// conformance suite, signed requests, the operation runner on its own loop, the fake backend behind it.
describeProvisioner("controlplane against the real control plane", async () => {
  const fake = createFakeProvisioner();
  const cp = await createTestControlPlane({ provisioner: fake, clock: realClock });
  const org = await cp.createOrg("conformance");
  const runner = createOperationRunner(cp.deps, "conformance-runner", 20);
  const app = createApp(cp.deps, { onOperationQueued: () => runner.wake() });
  runner.start();
  const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" });
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const signingKey = deriveTenantSigningKey(SHARED_SECRET, org.orgId);

  // What a tenant does at start-up: read its config, report its boot, then build its backend from the config.
  const client = new ControlPlaneClient({ baseUrl, tenantToken: org.credential, signingKey });
  const config = await fetchTenantConfig(client, { waitMs: 5_000 });
  expect(config).toMatchObject({ org_id: org.orgId, slug: "conformance", workspace_backend: "fake" });
  expect(await postBootEvent(client, { stage: "ready" })).toBe(true);
  expect((await cp.admin("GET", "/cp/orgs/conformance")).body.org.status).toBe("ready");

  const provisioner = createControlPlaneProvisioner({
    baseUrl,
    tenantToken: org.credential,
    signingKey,
    orgId: org.orgId,
    capabilities: config.capabilities,
    requestTimeoutMs: 5_000,
    retry: { maxAttempts: 5, baseDelayMs: 20, maxDelayMs: 200, maxElapsedMs: 10_000 },
  });
  let seq = 0;
  return {
    provisioner,
    runningTimeoutMs: 10_000,
    makeSpec(overrides = {}) {
      seq += 1;
      const workspaceId = overrides.workspaceId ?? `ws_01jcpconformance0000${String(seq).padStart(6, "0")}`;
      return {
        // Whatever the tenant says, the control plane labels with its own deployment.
        deployment: "tenant-deployment",
        runtime: "echo",
        tier: 2,
        env: { WORKSPACE_ID: workspaceId, WORKSPACE_BOOT_TOKEN: "boot-secret-value" },
        secretKeys: ["WORKSPACE_BOOT_TOKEN"],
        metadata: {},
        ...overrides,
        workspaceId,
        // The tenant credential decides the org; the spec follows it.
        orgId: org.orgId,
      };
    },
    // Not retryable, so the control plane's runner fails the operation instead of retrying it on its own.
    faults: {
      failNextProvisionPartway: () =>
        fake.crashAfterStep(
          "volume_ready",
          new ProvisionerError("backend_error", "crashed after the volume was made", false),
        ),
    },
    async cleanup() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await runner.stop();
      await cp.close();
    },
  };
});

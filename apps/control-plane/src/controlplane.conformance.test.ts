/**
 * The shared provisioner conformance suite for the tenant's `controlplane` backend, end to end over real HTTP
 * against this control plane: its signed tenant routes, its durable operation runner and PostgreSQL, with the
 * scripted fake provisioner as the workspace backend. provisioner-core runs the same suite against its in-test
 * emulator; this file is where the backend meets the real service.
 */
import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { createIdGenerator, deriveTenantSigningKey } from "@molecule/contracts";
import {
  ControlPlaneClient,
  createControlPlaneProvisioner,
  fetchTenantConfig,
  ProvisionerError,
  type WorkspaceSpec,
} from "@molecule/provisioner-core";
import { describeProvisioner } from "@molecule/provisioner-core/conformance";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { Sealer } from "@molecule/tenant-platform/crypto";
import pino from "pino";
import { expect } from "vitest";
import { createTestDatabase } from "../../../test-support/pg.ts";
import { createApp, createOperationRunner, systemClock } from "./app.ts";
import { CP_MIGRATIONS } from "./db/migrations.ts";
import type { ControlPlaneDeps } from "./services/deps.ts";
import { createFakeTenantBackend } from "./tenants/fake.ts";

const ADMIN_TOKEN = "cp-admin-token-for-conformance-0123456789";
const SHARED_SECRET = "provision-shared-secret-for-conformance-0123456789";

describeProvisioner("controlplane against the control-plane service", async () => {
  const db = await createTestDatabase({ migrations: CP_MIGRATIONS });
  const workspaces = createFakeProvisioner({ suspend: true });
  const deps: ControlPlaneDeps = {
    db: db.db,
    provisioner: workspaces,
    tenants: createFakeTenantBackend(),
    sealer: Sealer.fromConfig(randomBytes(32).toString("hex"), 1, ""),
    clock: systemClock,
    ids: createIdGenerator(),
    logger: pino({ level: "silent" }),
    settings: {
      adminToken: ADMIN_TOKEN,
      provisionSharedSecret: SHARED_SECRET,
      publicUrl: "http://127.0.0.1:8090",
      deployment: "cp-conformance",
      maxBodyBytes: 256 * 1024,
      operationLeaseMs: 30_000,
      operationMaxAttempts: 3,
    },
  };
  const runner = createOperationRunner(deps, `conformance-${randomBytes(3).toString("hex")}`, 20);
  const app = createApp(deps, { onOperationQueued: () => runner.wake() });
  const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" });
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  runner.start();

  const created = await app.request("/cp/orgs", {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ slug: "conformance", name: "Conformance" }),
  });
  expect(created.status).toBe(201);
  const org = (await created.json()) as { org: { id: string }; tenant_credential: string };
  const credentials = {
    baseUrl,
    tenantToken: org.tenant_credential,
    signingKey: deriveTenantSigningKey(SHARED_SECRET, org.org.id),
  };
  // what the tenant platform does at start-up: its capabilities come from the control plane
  const config = await fetchTenantConfig(new ControlPlaneClient(credentials), { waitMs: 5_000 });
  expect(config.org_id).toBe(org.org.id);

  const provisioner = createControlPlaneProvisioner({
    ...credentials,
    orgId: config.org_id,
    capabilities: config.capabilities,
    pollIntervalMs: 20,
    retry: { maxAttempts: 4, baseDelayMs: 10, maxDelayMs: 100 },
  });
  let seq = 0;
  return {
    provisioner,
    makeSpec(overrides: Partial<WorkspaceSpec> = {}): WorkspaceSpec {
      seq += 1;
      const workspaceId = overrides.workspaceId ?? `ws_01jcpconf${String(seq).padStart(17, "0")}`;
      return {
        workspaceId,
        deployment: "tenant-deployment",
        runtime: "echo",
        tier: 2,
        env: { WORKSPACE_ID: workspaceId, WORKSPACE_BOOT_TOKEN: "boot-secret-value" },
        secretKeys: ["WORKSPACE_BOOT_TOKEN"],
        metadata: {},
        ...overrides,
        // the tenant credential decides the org
        orgId: config.org_id,
      };
    },
    runningTimeoutMs: 10_000,
    faults: {
      failNextProvisionPartway: () =>
        workspaces.crashAfterStep(
          "volume_ready",
          new ProvisionerError("backend_error", "conformance: crash after the volume was made", false),
        ),
    },
    async cleanup() {
      await runner.stop();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await db.drop();
    },
  };
});

/**
 * The SaaS shape as separate processes over real HTTP: the control plane (main.ts on PostgreSQL, the Fly emulator as
 * its workspace backend, tenants started by the operator: CP_TENANT_BACKEND=external), one org created through its
 * admin API, and that org's tenant platform in SaaS mode started with what `POST /cp/orgs` answered, as the control
 * plane's tenant backend would inject it (docs/control-plane.md).
 */
import { randomBytes } from "node:crypto";
import { deriveTenantSigningKey } from "@molecule/identity";
import { CP_MIGRATIONS } from "../apps/control-plane/src/db/migrations.ts";
import { type FlyHarness, startFlyHarness } from "../packages/provisioner-core/src/flyio/testkit.ts";
import { type ControlPlaneProcess, startControlPlaneProcess } from "./control-plane.ts";
import { createTestDatabase, type TestDatabase } from "./pg.ts";
import {
  freePort,
  killAllPlatformProcesses,
  type PlatformProcess,
  startPlatformProcess,
  uniqueDeployment,
} from "./process.ts";

export interface SaasFly {
  harness: FlyHarness;
  fly: FlyHarness["emulator"];
  /** The Fly app the control plane makes workspace machines in. */
  flyApp: string;
  flyToken: string;
  /** The control plane's PROVISION_SHARED_SECRET (the tenant gets the key derived from it for its org). */
  sharedSecret: string;
  cpDb: TestDatabase;
  tenantDb: TestDatabase;
  cp: ControlPlaneProcess;
  tenant: PlatformProcess;
  /** The org as `POST /cp/orgs` answered it: its id, the tenant's credential and admin token. */
  org: { id: string; credential: string; adminToken: string };
  /** Kills every process this test file started and drops both databases. */
  close(): Promise<void>;
}

export async function startSaasFly(options: {
  flyApp: string;
  slug: string;
  name: string;
}): Promise<SaasFly> {
  const { flyApp, slug, name } = options;
  const flyToken = `fly-e2e-${randomBytes(8).toString("hex")}`;
  const sharedSecret = randomBytes(32).toString("hex");
  // Only the harness's emulator (validated against Fly's OpenAPI document) is used: the control plane is the client.
  const harness = await startFlyHarness({ emulator: { token: flyToken, apps: [flyApp] } });
  const fly = harness.emulator;
  const cpDb = await createTestDatabase({ migrations: CP_MIGRATIONS });
  const tenantDb = await createTestDatabase();
  const tenantPort = await freePort();
  const cp = await startControlPlaneProcess({
    env: {
      DATABASE_URL: cpDb.url,
      PROVISION_SHARED_SECRET: sharedSecret,
      MOLECULE_DEPLOYMENT: uniqueDeployment(),
      CP_WORKSPACE_BACKEND: "flyio",
      FLY_API_TOKEN: flyToken,
      FLY_WORKSPACE_APP: flyApp,
      FLY_API_BASE_URL: fly.url,
      CP_TENANT_BACKEND: "external",
      TENANT_URL_TEMPLATE: `http://127.0.0.1:${tenantPort}`,
    },
  });
  const created = await cp.admin("POST", "/cp/orgs", { slug, name });
  if (created.status !== 201)
    throw new Error(`POST /cp/orgs: ${created.status} ${JSON.stringify(created.body)}`);
  const org = {
    id: created.body.org.id as string,
    credential: created.body.tenant_credential as string,
    adminToken: created.body.tenant_admin_token as string,
  };
  const tenant = await startPlatformProcess({
    env: {
      PORT: String(tenantPort),
      DATABASE_URL: tenantDb.url,
      MOLECULE_ENV: "production",
      MOLECULE_ORG_ID: org.id,
      CP_PROVISION_URL: cp.url,
      CP_TENANT_TOKEN: org.credential,
      PROVISION_SHARED_SECRET: deriveTenantSigningKey(sharedSecret, org.id),
      ADMIN_TOKEN: org.adminToken,
    },
  });
  return {
    harness,
    fly,
    flyApp,
    flyToken,
    sharedSecret,
    cpDb,
    tenantDb,
    cp,
    tenant,
    org,
    async close() {
      await killAllPlatformProcesses();
      await harness.close();
      await cpDb.drop();
      await tenantDb.drop();
    },
  };
}

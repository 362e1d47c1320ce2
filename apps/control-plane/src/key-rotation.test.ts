import { Writable } from "node:stream";
import { createIdGenerator } from "@molecule/contracts";
import { CP_SECRETS_KEY_NAMES, Sealer } from "@molecule/identity";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { cpOperations, cpOrgs } from "./db/schema.ts";
import { ADMIN_TOKEN, createTestControlPlane, type TestControlPlane } from "./testing.ts";

// Rotating CP_SECRETS_ENCRYPTION_KEY: what version 1 sealed (each org's tenant environment, every queued operation's
// input) keeps working after a restart with version 2 current and version 1 kept as an old key; without it, every
// place that needs it says which version is missing. Real PostgreSQL; a restart is a second control plane (createApp,
// runner) on the same database with another key ring.

const KEY_1 = "22".repeat(32);
const KEY_2 = Buffer.alloc(32, 9).toString("base64");
const ring = (current: string, version: number, oldKeys = "") =>
  Sealer.fromConfig(current, version, oldKeys, CP_SECRETS_KEY_NAMES);

const NO_V1 = "sealed with key version 1, which this process does not have";
const WORKSPACE_SECRET = "ws-secret-sealed-under-v1";

const planes: TestControlPlane[] = [];
afterEach(async () => {
  // Restarted control planes first: the first one owns the database and drops it.
  for (const plane of planes.reverse()) await plane.close();
  planes.length = 0;
});

async function start(
  fake: FakeProvisioner,
  sealer: Sealer,
  options: { on?: TestControlPlane; logs?: string[] } = {},
): Promise<TestControlPlane> {
  const logs = options.logs;
  const plane = await createTestControlPlane({
    provisioner: fake,
    sealer,
    ...(options.on ? { database: options.on.db, clock: options.on.clock } : {}),
    ...(logs
      ? {
          logger: pino(
            { level: "info" },
            new Writable({
              write(chunk, _encoding, done) {
                logs.push(String(chunk));
                done();
              },
            }),
          ),
        }
      : {}),
  });
  planes.push(plane);
  return plane;
}

const CREATE_ORG = { slug: "rotated-org", name: "Rotated" };

/** What the first process (key version 1) left: an org whose tenant is not provisioned yet, a queued workspace provision. */
async function sealedUnderV1(fake: FakeProvisioner) {
  const first = await start(fake, ring(KEY_1, 1));
  const created = await first.admin("POST", "/cp/orgs", CREATE_ORG, { "idempotency-key": "org-create" });
  expect(created.status).toBe(201);
  const org = {
    orgId: created.body.org.id,
    slug: CREATE_ORG.slug,
    credential: created.body.tenant_credential,
  };
  const workspaceId = createIdGenerator().next("ws");
  const provisionBody = {
    workspace_id: workspaceId,
    runtime: "echo",
    tier: 2,
    env: { WORKSPACE_ID: workspaceId, MODEL_KEY: WORKSPACE_SECRET },
    secret_keys: ["MODEL_KEY"],
    metadata: {},
  };
  const provision = await first.tenant(org, "POST", "/cp/workspaces/provision", {
    body: provisionBody,
    idempotencyKey: "provision-1",
  });
  expect(provision.status).toBe(202);
  const operations = await first.db.db.select().from(cpOperations);
  expect(operations.map((row) => row.status)).toEqual(["pending", "pending"]);
  const [orgRow] = await first.db.db.select().from(cpOrgs);
  expect(orgRow?.tenantEnvKeyVersion).toBe(1);
  expect(operations.find((row) => row.kind === "provision")?.sealedKeyVersion).toBe(1);
  const sealedValues = [orgRow?.tenantEnvSealed, ...operations.map((row) => row.sealedInput)].filter(
    (value): value is string => typeof value === "string",
  );
  return {
    first,
    created: created.body,
    org,
    workspaceId,
    provisionBody,
    provisionOperationId: provision.body.operation.id as string,
    sealedValues,
  };
}

describe("after rotating to key version 2 with version 1 kept as an old key", () => {
  it("replays the org create and the provision, and runs the operations version 1 sealed", async () => {
    const fake = createFakeProvisioner();
    const before = await sealedUnderV1(fake);
    const after = await start(fake, ring(KEY_2, 2, `1:${KEY_1}`), { on: before.first });

    // The org create's replay answers the same credentials, opened from the environment version 1 sealed.
    const replayedOrg = await after.admin("POST", "/cp/orgs", CREATE_ORG, {
      "idempotency-key": "org-create",
    });
    expect(replayedOrg.status).toBe(201);
    expect(replayedOrg.body.tenant_credential).toBe(before.created.tenant_credential);
    expect(replayedOrg.body.tenant_admin_token).toBe(before.created.tenant_admin_token);

    // The provision's replay answers the same operation.
    const replayed = await after.tenant(before.org, "POST", "/cp/workspaces/provision", {
      body: before.provisionBody,
      idempotencyKey: "provision-1",
    });
    expect(replayed.status).toBe(202);
    expect(replayed.body.operation.id).toBe(before.provisionOperationId);

    // Both queued operations run: the tenant gets its environment, the workspace its secret env.
    await after.runner.drain();
    expect(after.tenants.inspect(before.org.orgId)?.env.CP_TENANT_TOKEN).toBe(
      before.created.tenant_credential,
    );
    expect(fake.inspect(before.workspaceId)?.instance?.env.MODEL_KEY).toBe(WORKSPACE_SECRET);
    const done = await after.tenant(before.org, "GET", `/cp/operations/${before.provisionOperationId}`);
    expect(done.body).toMatchObject({ status: "succeeded", error: null });

    // What is sealed from now on uses version 2.
    const start2 = await after.tenant(before.org, "POST", `/cp/workspaces/${before.workspaceId}/start`, {
      body: { spec: before.provisionBody },
    });
    expect(start2.status).toBe(202);
    const rows = await after.db.db.select().from(cpOperations);
    expect(rows.find((row) => row.id === start2.body.operation.id)?.sealedKeyVersion).toBe(2);
    const second = await after.admin("POST", "/cp/orgs", { slug: "after-rotation", name: "After" });
    expect(second.status).toBe(201);
    const orgs = await after.db.db.select().from(cpOrgs);
    expect(orgs.find((row) => row.slug === "after-rotation")?.tenantEnvKeyVersion).toBe(2);
    await after.runner.drain();
  });
});

describe("after rotating to key version 2 without keeping version 1", () => {
  it("says which key version is missing, in the envelope and on the operations, with no crypto text and no 500", async () => {
    const fake = createFakeProvisioner();
    const before = await sealedUnderV1(fake);
    const logs: string[] = [];
    const after = await start(fake, ring(KEY_2, 2), { on: before.first, logs });

    const replayedOrg = await after.admin("POST", "/cp/orgs", CREATE_ORG, {
      "idempotency-key": "org-create",
    });
    expect(replayedOrg.status).toBe(503);
    expect(replayedOrg.body.error.code).toBe("secrets_key_unavailable");
    expect(replayedOrg.body.error.message).toContain(NO_V1);
    expect(replayedOrg.body.error.message).toContain("CP_SECRETS_ENCRYPTION_OLD_KEYS");
    expect(replayedOrg.body.error.requestId).toMatch(/^req_/);

    // Replaying the provision opens nothing: it still answers its operation.
    const replayed = await after.tenant(before.org, "POST", "/cp/workspaces/provision", {
      body: before.provisionBody,
      idempotencyKey: "provision-1",
    });
    expect(replayed.status).toBe(202);

    // Both queued operations fail at once with the reason; the org and the workspace are marked failed.
    await after.runner.drain();
    const operations = await after.db.db.select().from(cpOperations);
    expect(operations).toHaveLength(2);
    for (const operation of operations) {
      expect(operation.status, operation.kind).toBe("failed");
      expect(operation.attempts, operation.kind).toBe(1);
      expect(operation.error).toMatchObject({ code: "secrets_key_unavailable", retryable: false });
      expect(operation.error?.message).toContain(NO_V1);
    }
    const shown = await after.tenant(before.org, "GET", `/cp/operations/${before.provisionOperationId}`);
    expect(shown.body.error).toMatchObject({ code: "secrets_key_unavailable" });
    const org = await after.admin("GET", `/cp/orgs/${CREATE_ORG.slug}`);
    expect(org.body.org.status).toBe("failed");
    expect(org.body.provision_status.last_error).toContain(NO_V1);
    expect(after.tenants.inspect(before.org.orgId)).toBeUndefined();
    expect(fake.inspect(before.workspaceId)).toBeUndefined();

    // Logged with the reason; never a sealed value, a secret or crypto library text.
    const logged = logs.join("");
    expect(logged).toContain(NO_V1);
    for (const sealed of before.sealedValues) expect(logged).not.toContain(sealed);
    for (const secret of [WORKSPACE_SECRET, before.created.tenant_credential, ADMIN_TOKEN]) {
      expect(logged).not.toContain(secret);
    }
    for (const text of [logged, replayedOrg.text, shown.text, org.text]) {
      expect(text).not.toMatch(/unable to authenticate|Unsupported state/i);
    }
  });
});

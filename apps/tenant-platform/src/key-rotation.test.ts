import { operations, workspaceSecrets } from "@molecule/db";
import { Sealer } from "@molecule/identity";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq, inArray } from "drizzle-orm";
import { afterEach, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";

// Rotating the secrets key: values sealed under the old key (secrets, the registration token a create answered, the
// boot token of a queued operation) keep working after a restart with a new current key and the old one kept, and
// without the old key every place that needs one says so clearly. Real PostgreSQL; a restart is a second platform
// (createApp, runner) on the same database with another key ring.

const KEY_1 = "11".repeat(32);
const KEY_2 = Buffer.alloc(32, 7).toString("base64");
const v1 = () => Sealer.fromConfig(KEY_1, 1, "");
const v2WithV1 = () => Sealer.fromConfig(KEY_2, 2, `1:${KEY_1}`);
const v2Only = () => Sealer.fromConfig(KEY_2, 2, "");

const NO_V1 = "sealed with key version 1, which this process does not have";

const platforms: TestPlatform[] = [];
afterEach(async () => {
  // Restarted platforms first: the first one owns the database and drops it.
  for (const platform of platforms.reverse()) await platform.close();
  platforms.length = 0;
});

async function start(fake: FakeProvisioner, sealer: Sealer, on?: TestPlatform): Promise<TestPlatform> {
  const platform = await createTestPlatform(fake, {}, { sealer, ...(on ? { database: on.database } : {}) });
  platforms.push(platform);
  return platform;
}

const EXTERNAL = { name: "remote", external: true, secrets: { MODEL_API_KEY: "sk-sealed-under-v1" } };
const LEGACY = { name: "legacy", external: true };
const MANAGED = {
  name: "managed",
  runtime: "echo",
  tier: 2,
  secrets: { MANAGED_SECRET: "managed-under-v1" },
};

/** What the first process (key version 1) left: an unused registration token, a registered agent, a queued provision. */
async function sealedUnderV1(fake: FakeProvisioner) {
  const first = await start(fake, v1());
  const external = await first.call("POST", "/workspaces", {
    body: EXTERNAL,
    headers: { "idempotency-key": "ext" },
  });
  expect(external.status).toBe(202);
  // A create answered before operations recorded their key version: its row has none.
  const legacy = await first.call("POST", "/workspaces", {
    body: LEGACY,
    headers: { "idempotency-key": "legacy" },
  });
  expect(legacy.status).toBe(202);
  await first.deps.db
    .update(operations)
    .set({ sealedKeyVersion: null })
    .where(eq(operations.id, legacy.body.operation.id));

  const agent = await first.call("POST", "/workspaces", { body: EXTERNAL });
  const agentId: string = agent.body.workspace.id;
  const registered = await first.call("POST", "/registry/register", {
    token: agent.body.connection.registration_token,
    body: { id: agentId },
  });
  expect(registered.status).toBe(200);

  // Queued, never run by this process (its runner is not started).
  const managed = await first.call("POST", "/workspaces", {
    body: MANAGED,
    headers: { "idempotency-key": "managed" },
  });
  expect(managed.status).toBe(202);

  const sealedRows = await first.deps.db.select().from(operations);
  expect(
    sealedRows
      .filter((row) => row.sealedInput)
      .map((row) => row.sealedKeyVersion)
      .sort(),
  ).toEqual([1, 1, 1, null]);
  const sealedValues = [
    ...sealedRows.map((row) => row.sealedInput),
    ...(await first.deps.db.select().from(workspaceSecrets)).map((row) => row.sealed),
  ].filter((value): value is string => typeof value === "string");
  return {
    first,
    external: external.body,
    legacy: legacy.body,
    agent: { id: agentId, token: registered.body.auth_token as string },
    managed: managed.body,
    sealedValues,
  };
}

describe("after rotating to key version 2 with version 1 kept as an old key", () => {
  it("replays, queued operations and secret delivery work with what version 1 sealed; new values use version 2", async () => {
    const fake = createFakeProvisioner();
    const before = await sealedUnderV1(fake);
    const after = await start(fake, v2WithV1(), before.first);

    // An idempotent replay of the external create answers the same, still unused, registration token.
    const replayed = await after.call("POST", "/workspaces", {
      body: EXTERNAL,
      headers: { "idempotency-key": "ext" },
    });
    expect(replayed.status).toBe(202);
    expect(replayed.body.workspace.id).toBe(before.external.workspace.id);
    expect(replayed.body.connection.registration_token).toBe(before.external.connection.registration_token);
    // So does one whose row has no key version: the key that authenticates it opens it.
    const legacy = await after.call("POST", "/workspaces", {
      body: LEGACY,
      headers: { "idempotency-key": "legacy" },
    });
    expect(legacy.status).toBe(202);
    expect(legacy.body.connection.registration_token).toBe(before.legacy.connection.registration_token);

    // The provision queued under version 1 runs: its secrets and boot token reach the backend.
    await after.runner.drain();
    const operation = await after.call("GET", `/operations/${before.managed.operation.id}`);
    expect(operation.body.status).toBe("succeeded");
    const env = fake.inspect(before.managed.workspace.id)?.instance?.env ?? {};
    expect(env.MANAGED_SECRET).toBe("managed-under-v1");
    expect(env.WORKSPACE_BOOT_TOKEN).toMatch(/^mbt_/);

    // The registered agent still pulls the secrets sealed under version 1.
    const pulled = await after.call("GET", `/workspaces/${before.agent.id}/secrets/values`, {
      token: before.agent.token,
    });
    expect(pulled.status).toBe(200);
    expect(pulled.body.secrets).toEqual({ MODEL_API_KEY: "sk-sealed-under-v1" });

    // A value written now is sealed with version 2; both versions open side by side.
    const put = await after.call("PUT", `/workspaces/${before.agent.id}/secrets/NEW_KEY`, {
      body: { value: "sealed-under-v2" },
    });
    expect(put.status).toBe(200);
    const versions = await after.deps.db
      .select({ key: workspaceSecrets.key, keyVersion: workspaceSecrets.keyVersion })
      .from(workspaceSecrets)
      .where(eq(workspaceSecrets.workspaceId, before.agent.id));
    expect(Object.fromEntries(versions.map((row) => [row.key, row.keyVersion]))).toEqual({
      MODEL_API_KEY: 1,
      NEW_KEY: 2,
    });
    const both = await after.call("GET", `/workspaces/${before.agent.id}/secrets/values`, {
      token: before.agent.token,
    });
    expect(both.body.secrets).toEqual({ MODEL_API_KEY: "sk-sealed-under-v1", NEW_KEY: "sealed-under-v2" });

    // A lifecycle operation queued now seals its boot token with version 2.
    const stop = await after.call("POST", `/workspaces/${before.managed.workspace.id}/stop`);
    expect(stop.status).toBe(202);
    await after.runner.drain();
    const restart = await after.call("POST", `/workspaces/${before.managed.workspace.id}/start`);
    expect(restart.status).toBe(202);
    const [queued] = await after.deps.db
      .select()
      .from(operations)
      .where(eq(operations.id, restart.body.operation.id));
    expect(queued?.sealedKeyVersion).toBe(2);
    await after.runner.drain();
    expect((await after.call("GET", `/operations/${restart.body.operation.id}`)).body.status).toBe(
      "succeeded",
    );
  });
});

describe("after rotating to key version 2 without keeping version 1", () => {
  it("says which key version is missing, in the envelope and on the operation, with no crypto text and no 500", async () => {
    const fake = createFakeProvisioner();
    const before = await sealedUnderV1(fake);
    const after = await start(fake, v2Only(), before.first);

    const replayed = await after.call("POST", "/workspaces", {
      body: EXTERNAL,
      headers: { "idempotency-key": "ext" },
    });
    expect(replayed.status).toBe(503);
    expect(replayed.body.error.code).toBe("secrets_key_unavailable");
    expect(replayed.body.error.message).toContain(NO_V1);
    expect(replayed.body.error.message).toContain("SECRETS_ENCRYPTION_OLD_KEYS");
    expect(replayed.body.error.requestId).toMatch(/^req_/);

    const legacy = await after.call("POST", "/workspaces", {
      body: LEGACY,
      headers: { "idempotency-key": "legacy" },
    });
    expect(legacy.status).toBe(503);
    expect(legacy.body.error.code).toBe("secrets_key_unavailable");
    expect(legacy.body.error.message).toContain("opens with none of the configured keys (versions 2)");

    const pulled = await after.call("GET", `/workspaces/${before.agent.id}/secrets/values`, {
      token: before.agent.token,
    });
    expect(pulled.status).toBe(503);
    expect(pulled.body.error.code).toBe("secrets_key_unavailable");
    expect(pulled.body.error.message).toContain(NO_V1);

    // The queued provision fails at once (no retry can find the key) with that reason, and so does its workspace.
    await after.runner.drain();
    const operation = await after.call("GET", `/operations/${before.managed.operation.id}`);
    expect(operation.body.status).toBe("failed");
    expect(operation.body.error.code).toBe("secrets_key_unavailable");
    expect(operation.body.error.message).toContain(NO_V1);
    const workspace = await after.call("GET", `/workspaces/${before.managed.workspace.id}`);
    expect(workspace.body.status).toBe("failed");
    expect(workspace.body.statusReason).toContain(NO_V1);
    expect(fake.inspect(before.managed.workspace.id)).toBeUndefined();

    // Every refusal is logged with its reason; no log line carries a sealed value, a secret or crypto library text.
    const logs = after.logs.join("");
    expect(logs).toContain(NO_V1);
    for (const sealed of before.sealedValues) expect(logs).not.toContain(sealed);
    for (const secret of ["sk-sealed-under-v1", "managed-under-v1"]) expect(logs).not.toContain(secret);
    expect(logs).not.toContain(before.external.connection.registration_token);
    for (const text of [replayed, legacy, pulled, operation, workspace].map((reply) =>
      JSON.stringify(reply.body),
    )) {
      expect(text).not.toMatch(/unable to authenticate|Unsupported state/i);
    }
    expect(logs).not.toMatch(/unable to authenticate|Unsupported state/i);

    // Nothing was changed by the refusals: the tokens stay unspent, the secrets as they were.
    const rows = await after.deps.db
      .select({ keyVersion: workspaceSecrets.keyVersion })
      .from(workspaceSecrets)
      .where(inArray(workspaceSecrets.workspaceId, [before.agent.id, before.managed.workspace.id]));
    expect(rows.map((row) => row.keyVersion)).toEqual([1, 1]);
  });
});

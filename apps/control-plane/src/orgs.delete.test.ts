import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cpOrgs } from "./db/schema.ts";
import { createTestControlPlane, type TestControlPlane } from "./testing.ts";

let cp: TestControlPlane;
let fake: FakeProvisioner;

beforeAll(async () => {
  fake = createFakeProvisioner();
  cp = await createTestControlPlane({ provisioner: fake });
});
afterAll(() => cp.close());

const spec = (workspaceId: string) => ({
  workspace_id: workspaceId,
  runtime: "echo",
  tier: 2,
  env: { WORKSPACE_ID: workspaceId, WORKSPACE_BOOT_TOKEN: "boot" },
  secret_keys: ["WORKSPACE_BOOT_TOKEN"],
  metadata: {},
});

describe("deleting an org cascades", () => {
  it("destroys its workspaces and tenant, removes every row of it, leaves a tombstone, and spares other orgs", async () => {
    const doomed = await cp.createOrg("doomed");
    const keeper = await cp.createOrg("keeper");
    await cp.runner.drain();
    const ids = ["ws_01jcpdelete000000000000001", "ws_01jcpdelete000000000000002"];
    for (const id of ids) {
      expect((await cp.tenant(doomed, "POST", "/cp/workspaces/provision", { body: spec(id) })).status).toBe(
        202,
      );
    }
    const kept = "ws_01jcpdelete000000000000003";
    await cp.tenant(keeper, "POST", "/cp/workspaces/provision", { body: spec(kept) });
    await cp.runner.drain();
    await cp.tenant(doomed, "POST", "/cp/tenants/boot-event", { body: { stage: "ready" } });
    const reported = await cp.tenant(doomed, "POST", "/cp/tenants/backup-report", {
      body: {
        slug: "doomed",
        outcome: "succeeded",
        location: "s3://molecule-backups/tenants/doomed/2026-01-01T00-00-00-000Z.dump",
        format: "pg_dump_custom",
        size_bytes: 1024,
        sha256: "0".repeat(64),
        started_at: "2026-01-01T00:00:00.000Z",
        finished_at: "2026-01-01T00:00:05.000Z",
      },
    });
    expect(reported.status).toBe(204);
    // A stray: made on the backend for the org but never recorded (e.g. a crash before the row was written).
    await fake.provision(
      {
        workspaceId: "ws_01jcpdelete000000000000009",
        orgId: doomed.orgId,
        deployment: "cp-test",
        runtime: "echo",
        tier: 2,
        env: {},
        secretKeys: [],
        metadata: {},
      },
      null,
    );
    // Queued but not yet run when the delete arrives: superseded, never run.
    await cp.tenant(doomed, "POST", `/cp/workspaces/${ids[0]}/stop`, { body: {} });

    const deleting = await cp.admin("DELETE", "/cp/orgs/doomed", { confirm: "doomed" });
    expect(deleting.status).toBe(202);
    expect(deleting.body.org.status).toBe("deleting");
    expect(deleting.body.operation).toMatchObject({ kind: "destroy_org", status: "pending" });
    const again = await cp.admin("DELETE", "/cp/orgs/doomed", { confirm: "doomed" });
    expect(again.status).toBe(202);
    expect(again.body.operation.id).toBe(deleting.body.operation.id);

    // While deleting, the tenant's credential no longer opens anything.
    expect((await cp.tenant(doomed, "GET", "/cp/workspaces")).status).toBe(401);
    expect((await cp.admin("GET", "/cp/orgs/doomed")).body.org.status).toBe("deleting");

    await cp.runner.drain();

    // The backends hold nothing of the org; the other org is untouched.
    expect(fake.workspaces().filter((ws) => ws.orgId === doomed.orgId)).toEqual([]);
    expect((await fake.listManaged()).filter((resource) => resource.orgId === doomed.orgId)).toEqual([]);
    expect(cp.tenants.inspect(doomed.orgId)).toBeUndefined();
    expect(fake.inspect(kept)?.instance?.state).toBe("running");
    expect(cp.tenants.inspect(keeper.orgId)?.running).toBe(true);

    // Nothing of the org is left in any table but its tombstone.
    const dump = await cp.snapshot();
    const orgs = await cp.db.db.select().from(cpOrgs);
    const tombstone = orgs.find((org) => org.id === doomed.orgId);
    expect(tombstone).toMatchObject({
      status: "deleted",
      tenantHandle: null,
      tenantUrl: null,
      tenantEnvSealed: null,
    });
    expect(tombstone?.deletedAt).toBeInstanceOf(Date);
    const withoutTombstone = dump.replace(JSON.stringify(tombstone).slice(1, -1), "");
    expect(withoutTombstone).not.toContain(doomed.orgId);
    for (const id of ids) expect(dump).not.toContain(id);
    expect(dump).toContain(keeper.orgId);

    // Listing hides it; GET shows the tombstone; DELETE again is accepted with nothing to do.
    const listed = await cp.admin("GET", "/cp/orgs");
    expect(listed.body.orgs.map((org: { slug: string }) => org.slug)).toEqual(["keeper"]);
    const shown = await cp.admin("GET", "/cp/orgs/doomed");
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({ org: { status: "deleted" }, provision_status: null, operation: null });
    const third = await cp.admin("DELETE", "/cp/orgs/doomed", { confirm: "doomed" });
    expect(third.status).toBe(202);
    expect(third.body).toMatchObject({ org: { status: "deleted" }, operation: null });

    // The slug can be taken again by a new org.
    const reborn = await cp.admin("POST", "/cp/orgs", { slug: "doomed", name: "Doomed again" });
    expect(reborn.status).toBe(201);
    expect(reborn.body.org.id).not.toBe(doomed.orgId);
    expect((await cp.admin("GET", "/cp/orgs/doomed")).body.org.status).toBe("provisioning");
  });

  it("a workspace backend failure during the cascade is retried and the delete still completes", async () => {
    const org = await cp.createOrg("flaky");
    await cp.runner.drain();
    await cp.tenant(org, "POST", "/cp/workspaces/provision", { body: spec("ws_01jcpdelete000000000000010") });
    await cp.runner.drain();
    fake.failNext("destroy");
    cp.tenants.failNext("destroy");
    await cp.admin("DELETE", "/cp/orgs/flaky", { confirm: "flaky" });
    for (let round = 0; round < 4; round++) {
      await cp.runner.drain();
      cp.clock.advance(10_000);
    }
    expect((await cp.admin("GET", "/cp/orgs/flaky")).body.org.status).toBe("deleted");
    expect(fake.inspect("ws_01jcpdelete000000000000010")).toBeUndefined();
    expect(cp.tenants.inspect(org.orgId)).toBeUndefined();
  });
});

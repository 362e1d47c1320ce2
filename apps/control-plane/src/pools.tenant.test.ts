/**
 * `PUT /cp/orgs/:slug/pools`: the operator sets an org's warm pool from the control plane, which forwards it to the
 * org's tenant platform (a real one, served over loopback HTTP with the org id and admin token the control plane
 * minted) through the tenant's own `PUT /pools`. The tenant's admin token is never in an answer or a log line.
 */
import type { AddressInfo } from "node:net";
import { createServer } from "node:net";
import { Writable } from "node:stream";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { runCli } from "./cli.ts";
import { cpOrgs } from "./db/schema.ts";
import { ADMIN_TOKEN, createTestControlPlane, realClock, type TestControlPlane } from "./testing.ts";

const logs: string[] = [];
let cp: TestControlPlane;
let tenant: TestPlatform;
let tenantToken = "";

beforeAll(async () => {
  cp = await createTestControlPlane({
    clock: realClock,
    logger: pino(
      { level: "debug" },
      new Writable({
        write(chunk, _encoding, done) {
          logs.push(String(chunk));
          done();
        },
      }),
    ),
  });
  const created = await cp.admin("POST", "/cp/orgs", { slug: "pooled", name: "Pooled" });
  expect(created.status).toBe(201);
  tenantToken = created.body.tenant_admin_token;
  tenant = await createTestPlatform(createFakeProvisioner(), {
    orgId: created.body.org.id,
    adminToken: tenantToken,
  });
  const url = await tenant.listen();
  await cp.deps.db
    .update(cpOrgs)
    .set({ status: "ready", tenantUrl: url })
    .where(eq(cpOrgs.id, created.body.org.id));
  // Not ready: no tenant to hold a pool yet.
  expect((await cp.admin("POST", "/cp/orgs", { slug: "unborn", name: "Unborn" })).status).toBe(201);
});

afterAll(async () => {
  await tenant?.close();
  await cp?.close();
});

async function tenantPools() {
  const listed = await tenant.call("GET", "/pools", { token: tenantToken });
  expect(listed.status).toBe(200);
  // The targets only: the tenant's filler moves the rest (members starting, timestamps) on its own.
  return (listed.body.pools as { runtime: string; tier: number; size: number }[]).map(
    ({ runtime, tier, size }) => ({
      runtime,
      tier,
      size,
    }),
  );
}

describe("PUT /cp/orgs/:slug/pools", () => {
  it("sets the pool on the org's tenant and answers the tenant's view of it; size 0 drains it", async () => {
    const set = await cp.admin("PUT", "/cp/orgs/pooled/pools", { runtime: "echo", tier: 2, size: 3 });
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({ runtime: "echo", tier: 2, size: 3 });
    expect((await tenantPools()).find((pool) => pool.runtime === "echo" && pool.tier === 2)?.size).toBe(3);

    const again = await cp.admin("PUT", "/cp/orgs/pooled/pools", { runtime: "echo", tier: 2, size: 3 });
    expect(again.status).toBe(200);
    expect(again.body.size).toBe(3);

    const drained = await cp.admin("PUT", "/cp/orgs/pooled/pools", { runtime: "echo", tier: 2, size: 0 });
    expect(drained.status).toBe(200);
    expect((await tenantPools()).find((pool) => pool.runtime === "echo" && pool.tier === 2)?.size).toBe(0);

    expect(JSON.stringify([set.body, again.body, drained.body])).not.toContain(tenantToken);
    expect(logs.join("")).not.toContain(tenantToken);
  });

  it("refuses a bad body with a 400 before the tenant is asked, and changes nothing", async () => {
    const before = await tenantPools();
    for (const body of [
      { runtime: "echo", tier: 2, size: 51 },
      { runtime: "echo", tier: 2, size: 1, extra: true },
      { runtime: "Echo!", tier: 2, size: 1 },
      { runtime: "echo", tier: 9, size: 1 },
      "not json",
    ]) {
      const refused = await cp.admin("PUT", "/cp/orgs/pooled/pools", body);
      expect(refused.status, JSON.stringify(body)).toBe(400);
      expect(refused.body.error.code).toBe("bad_request");
    }
    expect(await tenantPools()).toEqual(before);
  });

  it("answers 404 for an unknown org, 400 for a malformed slug, 409 for an org whose tenant is not ready", async () => {
    const body = { runtime: "echo", tier: 2, size: 1 };
    expect((await cp.admin("PUT", "/cp/orgs/nobody-here/pools", body)).status).toBe(404);
    expect((await cp.admin("PUT", "/cp/orgs/NOT_A_SLUG/pools", body)).status).toBe(400);
    const unborn = await cp.admin("PUT", "/cp/orgs/unborn/pools", body);
    expect(unborn.status).toBe(409);
    expect(unborn.body.error.message).toContain("provisioning");
  });

  it("passes the tenant's refusal on with its status and reason, and a tenant that does not answer as a 503", async () => {
    // Valid for the control plane's schema, refused by the tenant itself: it runs no such runtime.
    const before = await tenantPools();
    const refusedByTenant = await cp.admin("PUT", "/cp/orgs/pooled/pools", {
      runtime: "not-here",
      tier: 2,
      size: 1,
    });
    expect(refusedByTenant.status).toBe(400);
    expect(refusedByTenant.body.error.message).toContain('runtime "not-here" cannot have a pool');
    expect(refusedByTenant.text).not.toContain(tenantToken);
    expect(await tenantPools()).toEqual(before);

    // A tenant URL where nothing listens (a port this test held and closed).
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const [org] = await cp.deps.db.select().from(cpOrgs).where(eq(cpOrgs.slug, "pooled"));
    const liveUrl = org?.tenantUrl ?? "";
    await cp.deps.db
      .update(cpOrgs)
      .set({ tenantUrl: `http://127.0.0.1:${port}` })
      .where(eq(cpOrgs.slug, "pooled"));
    try {
      const gone = await cp.admin("PUT", "/cp/orgs/pooled/pools", { runtime: "echo", tier: 2, size: 1 });
      expect(gone.status).toBe(503);
      expect(gone.body.error.code).toBe("upstream_unavailable");
      expect(gone.body.error.message).toContain("pooled");
      expect(gone.text).not.toContain(tenantToken);
    } finally {
      await cp.deps.db.update(cpOrgs).set({ tenantUrl: liveUrl }).where(eq(cpOrgs.slug, "pooled"));
    }
  }, 60_000);

  it("is what molecule-cp orgs set-pool runs", async () => {
    const cli = async (args: string[]) => {
      let stdout = "";
      let stderr = "";
      const code = await runCli(args, {
        env: { CP_URL: "http://cp.test", CP_ADMIN_API_TOKEN: ADMIN_TOKEN },
        stdout: (text) => {
          stdout += text;
        },
        stderr: (text) => {
          stderr += text;
        },
        tty: false,
        fetch: ((input: string | URL | Request, init?: RequestInit) =>
          cp.app.fetch(new Request(input, init))) as typeof fetch,
      });
      return { code, stdout, stderr };
    };
    const set = await cli(["orgs", "set-pool", "pooled", "--runtime", "echo", "--tier", "3", "--size", "2"]);
    expect(set).toMatchObject({ code: 0, stderr: "" });
    expect(set.stdout).toMatch(/^pool echo tier 3: size 2, ready \d+, starting \d+, claimed 0\n$/);
    expect(await tenantPools()).toContainEqual({ runtime: "echo", tier: 3, size: 2 });
    const usage = await cli([
      "orgs",
      "set-pool",
      "pooled",
      "--runtime",
      "echo",
      "--tier",
      "one",
      "--size",
      "2",
    ]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("--tier N");
    const refused = await cli([
      "orgs",
      "set-pool",
      "unborn",
      "--runtime",
      "echo",
      "--tier",
      "3",
      "--size",
      "1",
    ]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("provisioning");
  });
});

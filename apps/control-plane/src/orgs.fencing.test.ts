/**
 * The org's row is written only by the attempt that holds its operation: an attempt of `provision_tenant` overtaken
 * by another control plane after its lease lapsed comes back late with its tenant and changes nothing, while the
 * attempt that holds the row writes its own. (An attempt abandoned at its deadline is refused the same way: see the
 * runner's tests and orgs.ec2.test.ts.)
 */
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOperationRunner } from "./app.ts";
import { cpOperations, cpOrgs } from "./db/schema.ts";
import type { TenantBackend, TenantInstance } from "./tenants/backend.ts";
import { createFakeTenantBackend } from "./tenants/fake.ts";
import { createTestControlPlane, type TestControlPlane } from "./testing.ts";

let cp: TestControlPlane;
const fake = createFakeTenantBackend();
/** The next `holdNext` provisions wait for the test to let them come back, with a stale URL. */
const held: (() => void)[] = [];
let holdNext = 0;

beforeAll(async () => {
  const holding: TenantBackend = {
    ...fake,
    async provision(spec, handle, ctx): Promise<TenantInstance> {
      if (holdNext === 0) return fake.provision(spec, handle, ctx);
      holdNext -= 1;
      // Ignores its signal, like a backend call that never heeds one: only the fence keeps it out.
      await new Promise<void>((release) => held.push(release));
      const instance = await fake.provision(spec, handle, { ...ctx, signal: undefined });
      return { ...instance, url: "http://stale-attempt.invalid:8080" };
    },
  };
  cp = await createTestControlPlane({ tenants: holding });
});
afterAll(() => cp.close());

async function orgRow(orgId: string) {
  const [row] = await cp.db.db.select().from(cpOrgs).where(eq(cpOrgs.id, orgId));
  return row;
}

async function provisionOperation(orgId: string) {
  const [row] = await cp.db.db.select().from(cpOperations).where(eq(cpOperations.orgId, orgId));
  if (!row) throw new Error("no operation");
  return row;
}

/** Lets the held call come back and waits until its attempt has finished with it. */
async function releaseHeld(attempt: Promise<void>): Promise<void> {
  const release = held.shift();
  if (!release) throw new Error("no held call");
  release();
  await attempt;
}

describe("an org operation's late attempt", () => {
  it("overtaken by another control plane after its lease lapsed writes nothing on the org", async () => {
    const { orgId } = await cp.createOrg("fenced-lease");
    holdNext = 1;
    const claimed = await cp.runner.claim();
    if (!claimed) throw new Error("nothing claimed");
    const stalled = cp.runner.execute(claimed);
    while (held.length === 0) await new Promise((resolve) => setImmediate(resolve));

    // The first control plane stalls past its lease; a second one claims the operation and finishes it.
    cp.clock.advance(cp.deps.settings.operationLeaseMs + 1);
    const other = createOperationRunner(cp.deps, "cp-second");
    expect(await other.drain()).toBe(1);
    const current = await orgRow(orgId);
    expect(current?.tenantUrl).toBe("http://tenant-fenced-lease.invalid:8080");
    expect(await provisionOperation(orgId)).toMatchObject({ status: "succeeded", attempts: 2 });

    await releaseHeld(stalled);
    expect(await orgRow(orgId)).toEqual(current);
    expect(await provisionOperation(orgId)).toMatchObject({ status: "succeeded", attempts: 2, error: null });
    expect(fake.created()).toBe(1);
  });
});

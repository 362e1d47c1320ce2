import { ChangeFeed } from "@molecule/service-kit/cluster";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../../../test-support/pg.ts";
import { CP_MIGRATIONS } from "./migrations.ts";
import { cpOrgs, cpTenantCredentials } from "./schema.ts";

let database: TestDatabase;
let feed: ChangeFeed;
const seen: string[] = [];

beforeAll(async () => {
  database = await createTestDatabase({ migrations: CP_MIGRATIONS });
  feed = await ChangeFeed.start(database);
  for (const topic of ["cp_orgs", "cp_tenant_credentials", "marker"]) {
    feed.on(topic, (key) => seen.push(`${topic}:${key}`));
  }
});

afterAll(async () => {
  await feed?.close();
  await database?.drop();
});

/** What the change feed announced for `write` (a marker sent after it bounds the wait). */
async function changesOf(write: () => Promise<unknown>): Promise<string[]> {
  seen.length = 0;
  await write();
  await database.notify("molecule_changes", "marker:end");
  for (let i = 0; i < 500 && !seen.includes("marker:end"); i++) await new Promise((r) => setTimeout(r, 10));
  expect(seen).toContain("marker:end");
  return seen.filter((entry) => entry !== "marker:end");
}

it("what a tenant's authentication reads (its org, its credentials) announces its org on every change", async () => {
  const org = { id: "org_n", slug: "notify", name: "Notify", status: "provisioning" as const };
  expect(await changesOf(() => database.db.insert(cpOrgs).values(org))).toEqual(["cp_orgs:org_n"]);
  expect(
    await changesOf(() =>
      database.db.update(cpOrgs).set({ updatedAt: new Date() }).where(eq(cpOrgs.id, "org_n")),
    ),
  ).toEqual([]);
  expect(
    await changesOf(() => database.db.update(cpOrgs).set({ status: "ready" }).where(eq(cpOrgs.id, "org_n"))),
  ).toEqual(["cp_orgs:org_n"]);
  expect(
    await changesOf(() => database.db.insert(cpTenantCredentials).values({ tokenHash: "h", orgId: "org_n" })),
  ).toEqual(["cp_tenant_credentials:org_n"]);
  expect(
    await changesOf(() =>
      database.db.delete(cpTenantCredentials).where(eq(cpTenantCredentials.orgId, "org_n")),
    ),
  ).toEqual(["cp_tenant_credentials:org_n"]);
});

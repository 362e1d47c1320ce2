/**
 * A workspace's row is written only by the attempt that holds its operation: an attempt of `provision` overtaken by
 * another replica after its lease lapsed comes back late with its handle and changes nothing, while the attempt that
 * holds the row writes its own. (An attempt abandoned at its deadline is refused the same way: see
 * operations.hang.test.ts.)
 */
import { operations, workspaces } from "@molecule/db";
import type { Provisioner } from "@molecule/provisioner-core";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { OperationRunner } from "./services/operations.ts";

// A lease far longer than the test, so the stalled attempt never renews it by itself: only the clock lapses it.
const LEASE_MS = 10 * 60_000;
const STALE_AGENT_URL = "http://stale-attempt.invalid:8080";

let platform: TestPlatform;
const fake = createFakeProvisioner();
/** The next `holdNext` provisions ignore their signal and return a stale agent URL once the fake's hangs are released. */
let holdNext = 0;

beforeAll(async () => {
  const holding: Provisioner = {
    ...fake,
    async provision(spec, handle, ctx) {
      if (holdNext === 0) return fake.provision(spec, handle, ctx);
      holdNext -= 1;
      fake.hangNext("provision");
      const late = await fake.provision(spec, handle, { ...ctx, signal: undefined });
      return { ...late, agentUrl: STALE_AGENT_URL };
    },
  };
  platform = await createTestPlatform(holding, { operationLeaseMs: LEASE_MS });
});
afterAll(() => platform.close());

async function operationRow(operationId: string) {
  const [row] = await platform.deps.db.select().from(operations).where(eq(operations.id, operationId));
  return row;
}

async function workspaceRow(workspaceId: string) {
  const [row] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, workspaceId));
  if (!row) throw new Error("no workspace");
  return row;
}

describe("a workspace operation's late attempt", () => {
  it("overtaken by another replica after its lease lapsed writes nothing on the workspace", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "fenced-lease", runtime: "echo" },
    });
    expect(created.status).toBe(202);
    const workspaceId: string = created.body.workspace.id;
    const operationId: string = created.body.operation.id;

    holdNext = 1;
    const claimed = await platform.runner.claim();
    if (!claimed) throw new Error("nothing claimed");
    const stalled = platform.runner.execute(claimed);
    while (fake.hangingCount() === 0) await new Promise((resolve) => setImmediate(resolve));

    // The first replica stalls past its lease; a second one claims the operation and finishes it.
    platform.clock.advance(LEASE_MS + 1);
    const other = new OperationRunner(platform.deps, "second-replica");
    expect(await other.drain()).toBe(1);
    expect(await operationRow(operationId)).toMatchObject({ status: "succeeded", attempts: 2 });
    expect((await workspaceRow(workspaceId)).status).toBe("awaiting_agent");

    // The workspace moves on: stopped, then a start queued (provisioning) that no replica has run yet.
    expect((await platform.call("POST", `/workspaces/${workspaceId}/stop`)).status).toBe(202);
    expect(await other.drain()).toBe(1);
    expect((await platform.call("POST", `/workspaces/${workspaceId}/start`)).status).toBe(202);
    const current = await workspaceRow(workspaceId);
    expect(current.status).toBe("provisioning");
    expect(current.handle?.agentUrl).not.toBe(STALE_AGENT_URL);

    // The stalled attempt's provision comes back now, with its own handle, and would move the workspace on.
    fake.releaseHangs();
    await stalled;
    expect(await workspaceRow(workspaceId)).toEqual(current);
    expect(await operationRow(operationId)).toMatchObject({ status: "succeeded", attempts: 2, error: null });
    expect(platform.logs.some((line) => line.includes("attempt superseded"))).toBe(true);
  });
});

import { operations } from "@molecule/db";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import { afterEach, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { waitFor } from "../../../test-support/wait.ts";

/**
 * A queued operation is claimed at once, not at the runner's next poll: the request that queued it wakes its own
 * process's runner, and its insert's change notification wakes every other replica's. The runners here poll once an
 * hour, so an operation that runs within the test was woken for. Claiming stays exactly once.
 */
const AN_HOUR = 3_600_000;

let fake: FakeProvisioner;
const platforms: TestPlatform[] = [];
afterEach(async () => {
  // The second replica first: the first owns the database and drops it.
  for (const platform of platforms.reverse()) await platform.close();
  platforms.length = 0;
});

async function replicas(): Promise<[TestPlatform, TestPlatform]> {
  fake = createFakeProvisioner();
  const first = await createTestPlatform(fake, {}, { runnerPollMs: AN_HOUR, runnerId: "runner-first" });
  platforms.push(first);
  const second = await createTestPlatform(
    fake,
    {},
    { database: first.database, runnerPollMs: AN_HOUR, runnerId: "runner-second" },
  );
  platforms.push(second);
  return [first, second];
}

const create = async (platform: TestPlatform, name: string) => {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  expect(created.status).toBe(202);
  return { id: created.body.workspace.id as string, operationId: created.body.operation.id as string };
};

const operationOf = async (platform: TestPlatform, operationId: string) => {
  const [row] = await platform.deps.db.select().from(operations).where(eq(operations.id, operationId));
  return row;
};

const finished = (platform: TestPlatform, operationId: string) =>
  waitFor(`operation ${operationId} to finish`, async () => {
    const row = await operationOf(platform, operationId);
    return row?.finishedAt ? row : undefined;
  });

/** Lets a just-started runner's first pass (which would claim anything queued) end before the test queues. */
async function idle(platform: TestPlatform): Promise<void> {
  const warmUp = await create(platform, "warm-up");
  await finished(platform, warmUp.operationId);
  await new Promise((resolve) => setTimeout(resolve, 200));
}

describe("a queued operation wakes the runners", () => {
  it("on another replica: its runner claims what this one queued, this one's runner not running", async () => {
    const [first, second] = await replicas();
    second.runner.start();
    await idle(second);

    const { id, operationId } = await create(first, "queued-on-first");
    const operation = await finished(first, operationId);
    expect(operation).toMatchObject({ status: "succeeded", attempts: 1 });
    expect((await first.call("GET", `/workspaces/${id}`)).body.status).toBe("awaiting_agent");
  });

  it("in the process that queued it", async () => {
    const [first] = await replicas();
    first.runner.start();
    await idle(first);

    const { operationId } = await create(first, "queued-here");
    expect(await finished(first, operationId)).toMatchObject({ status: "succeeded", attempts: 1 });
  });

  it("each woken runner tries, one claims: every operation runs once", async () => {
    const [first, second] = await replicas();
    first.runner.start();
    second.runner.start();
    await idle(first);

    const queued = await Promise.all(
      Array.from({ length: 8 }, (_, i) => create(i % 2 ? second : first, `many-${i}`)),
    );
    for (const { id, operationId } of queued) {
      const operation = await finished(first, operationId);
      expect(operation).toMatchObject({ status: "succeeded", attempts: 1 });
      // A second run would have recorded its steps again.
      expect(operation?.steps.map((step) => step.name)).toEqual([
        "image_ready",
        "volume_ready",
        "instance_created",
        "instance_started",
      ]);
      expect(fake.inspect(id)?.instance?.state).toBe("running");
    }
  });
});

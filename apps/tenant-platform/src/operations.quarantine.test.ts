/**
 * Operations whose attempts never finished: a platform process that claims an operation and dies (or hangs) leaves
 * it `running` under a lease that expires. Each such attempt is counted at claim; once they are spent the operation
 * is quarantined instead of being claimed again. Each "dead" process here is a runner that claims and never
 * finishes, as a SIGKILLed process would.
 */
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { OperationRunner } from "@molecule/tenant-platform/operations";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import type { PlatformEvent } from "./services/events.ts";

let platform: TestPlatform;
let fake: FakeProvisioner;
const events: PlatformEvent[] = [];

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake);
  platform.deps.events.subscribe({}, (event) => events.push(event));
});
afterAll(() => platform.close());

async function create(name: string): Promise<{ workspaceId: string; operationId: string }> {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  expect(created.status).toBe(202);
  return { workspaceId: created.body.workspace.id, operationId: created.body.operation.id };
}

/** `count` processes in turn claim the operation and die in its attempt; the clock then passes the last lease. */
async function dieInAttempts(operationId: string, count: number): Promise<void> {
  for (let attempt = 1; attempt <= count; attempt++) {
    const dead = new OperationRunner(platform.deps, `dead-${operationId}-${attempt}`);
    expect((await dead.claim())?.id).toBe(operationId);
    platform.clock.advance(platform.deps.settings.operationLeaseMs + 1_000);
  }
}

describe("an operation whose attempts all died with their process", () => {
  it("is quarantined without running: the operation and the workspace say why, one event, one error line", async () => {
    const max = platform.deps.settings.operationMaxAttempts;
    const poison = await create("poison");
    await dieInAttempts(poison.operationId, max);

    expect(await platform.runner.drain()).toBe(0);
    // Never run: the backend has nothing for it and no step was recorded.
    expect(fake.inspect(poison.workspaceId)).toBeUndefined();
    const message = `attempt ${max} of ${max} never finished (the process running it stopped or hung); the operation was quarantined and will not run again`;
    const operation = await platform.call("GET", `/operations/${poison.operationId}`);
    expect(operation.body).toMatchObject({
      status: "failed",
      attempts: max,
      steps: [],
      error: { code: "quarantined", message },
    });
    expect(operation.body.finishedAt).toBeTruthy();
    const workspace = await platform.call("GET", `/workspaces/${poison.workspaceId}`);
    expect(workspace.body).toMatchObject({ status: "failed", statusReason: message });

    const mine = events.filter((event) => event.workspaceId === poison.workspaceId);
    expect(mine.filter((event) => event.type === "operation.finished").map((event) => event.data)).toEqual([
      {
        operationId: poison.operationId,
        kind: "provision",
        status: "failed",
        error: { code: "quarantined", message },
      },
    ]);
    expect(mine.filter((event) => event.type === "workspace.status").at(-1)?.data).toEqual({
      from: "provisioning",
      to: "failed",
      reason: message,
    });
    const lines = platform.logs
      .map((line) => JSON.parse(line) as { level: number; msg: string; operationId?: string })
      .filter((line) => line.operationId === poison.operationId);
    expect(lines.map((line) => [line.level, line.msg])).toEqual([[50, `operation quarantined: ${message}`]]);

    // The failed workspace can still be deleted: its next operation is not held up.
    expect((await platform.call("DELETE", `/workspaces/${poison.workspaceId}`)).status).toBe(202);
    expect(await platform.runner.drain()).toBe(1);
    expect((await platform.call("GET", `/workspaces/${poison.workspaceId}`)).body.status).toBe("removed");
  });

  it("with attempts left it runs again, and succeeds", async () => {
    const max = platform.deps.settings.operationMaxAttempts;
    const recovered = await create("recovered");
    await dieInAttempts(recovered.operationId, max - 1);

    expect(await platform.runner.drain()).toBe(1);
    const operation = await platform.call("GET", `/operations/${recovered.operationId}`);
    expect(operation.body).toMatchObject({ status: "succeeded", attempts: max, error: null });
    expect(fake.inspect(recovered.workspaceId)?.instance?.state).toBe("running");
    expect((await platform.call("GET", `/workspaces/${recovered.workspaceId}`)).body.status).toBe(
      "awaiting_agent",
    );
  });

  it("a recovered operation runs alone: nothing else is claimed beside it", async () => {
    const recovered = await create("alone");
    await dieInAttempts(recovered.operationId, 1);
    const queued = await create("queued");
    const first = await platform.runner.claim();
    expect(first?.id).toBe(recovered.operationId);
    expect(await platform.runner.claim()).toBeNull();
    if (first) await platform.runner.execute(first);
    const second = await platform.runner.claim();
    expect(second?.id).toBe(queued.operationId);
    if (second) await platform.runner.execute(second);
    for (const done of [recovered, queued]) {
      expect((await platform.call("GET", `/operations/${done.operationId}`)).body.status).toBe("succeeded");
    }
  });
});

/**
 * Operations whose backend call never returns: past its kind's deadline the attempt is abandoned as hung (its signal
 * aborts), retried under the usual attempts limit, and whatever the abandoned attempt does when it comes back late
 * changes nothing. The deadline is set per test on the platform's settings: a few milliseconds for the attempt that
 * hangs (it never returns, so the deadline always passes), the default for the rest.
 */
import { operations } from "@molecule/db";
import type { Provisioner } from "@molecule/provisioner-core";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { retryDelayMs } from "@molecule/service-kit/operations";
import { countHungOperations, type OperationsTable } from "@molecule/service-kit/runner";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";

let platform: TestPlatform;
let fake: FakeProvisioner;
const signals: AbortSignal[] = [];
const calls: Promise<unknown>[] = [];

beforeAll(async () => {
  fake = createFakeProvisioner();
  // A backend whose provision ignores its signal (it returns only when the fake's hangs are released); the runner
  // must not depend on it heeding the abort.
  const deaf: Provisioner = {
    ...fake,
    provision: (spec, handle, ctx) => {
      if (ctx?.signal) signals.push(ctx.signal);
      const call = fake.provision(spec, handle, { ...ctx, signal: undefined });
      calls.push(call);
      return call;
    },
  };
  platform = await createTestPlatform(deaf);
});
afterAll(() => platform.close());

function deadlines(provisionMs: number | undefined): void {
  platform.deps.settings.operationDeadlinesMs =
    provisionMs === undefined ? undefined : { provision: provisionMs };
}

async function create(name: string): Promise<{ workspaceId: string; operationId: string }> {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  expect(created.status).toBe(202);
  return { workspaceId: created.body.workspace.id, operationId: created.body.operation.id };
}

const hungOperations = () => countHungOperations(platform.deps.db, operations as unknown as OperationsTable);

describe("an operation whose backend call never returns", () => {
  it("is marked hung at its deadline, its signal aborted, retried, and its late result changes nothing", async () => {
    const before = await hungOperations();
    const { workspaceId, operationId } = await create("hangs-once");
    const first = calls.length;
    fake.hangNext("provision");
    deadlines(5);
    expect(await platform.runner.drain()).toBe(1);
    expect(signals.at(-1)?.aborted).toBe(true);
    const hung = await platform.call("GET", `/operations/${operationId}`);
    expect(hung.body).toMatchObject({
      status: "pending",
      attempts: 1,
      error: {
        code: "hung",
        message:
          "provision did not finish within its deadline of 5 ms; attempt 1 of 3 was abandoned and the operation will be retried",
      },
    });
    expect(hung.body.steps).toEqual([expect.objectContaining({ name: "hung" })]);
    expect((await platform.call("GET", `/workspaces/${workspaceId}`)).body.status).toBe("provisioning");
    expect(await hungOperations()).toBe(before + 1);

    deadlines(undefined);
    platform.clock.advance(retryDelayMs(1));
    expect(await platform.runner.drain()).toBe(1);
    const done = await platform.call("GET", `/operations/${operationId}`);
    expect(done.body).toMatchObject({ status: "succeeded", attempts: 2 });
    const workspace = (await platform.call("GET", `/workspaces/${workspaceId}`)).body;
    expect(workspace.status).toBe("awaiting_agent");
    const instance = fake.inspect(workspaceId)?.instance?.id;

    // The abandoned attempt's provision returns now: it reports its steps and would save its handle.
    fake.releaseHangs();
    await calls[first];
    expect(fake.hangingCount()).toBe(0);
    expect((await platform.call("GET", `/operations/${operationId}`)).body).toEqual(done.body);
    expect((await platform.call("GET", `/workspaces/${workspaceId}`)).body).toEqual(workspace);
    expect(fake.inspect(workspaceId)?.instance?.id).toBe(instance);
  });

  it("fails after the attempts limit with an error naming the kind and deadline; the workspace fails with it", async () => {
    const max = platform.deps.settings.operationMaxAttempts;
    const { workspaceId, operationId } = await create("hangs-always");
    fake.hangNext("provision", max);
    deadlines(5);
    for (let attempt = 1; attempt <= max; attempt++) {
      expect(await platform.runner.drain()).toBe(1);
      platform.clock.advance(retryDelayMs(attempt));
    }
    deadlines(undefined);
    const message = `provision did not finish within its deadline of 5 ms; gave up after ${max} attempts`;
    const operation = await platform.call("GET", `/operations/${operationId}`);
    expect(operation.body).toMatchObject({
      status: "failed",
      attempts: max,
      error: { code: "hung", message },
    });
    expect(operation.body.steps.filter((step: { name: string }) => step.name === "hung")).toHaveLength(max);
    const workspace = await platform.call("GET", `/workspaces/${workspaceId}`);
    expect(workspace.body).toMatchObject({ status: "failed", statusReason: message });
    fake.releaseHangs();
  });
});

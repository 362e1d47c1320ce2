/**
 * Operations whose attempts never finished: a process that claims an operation and dies (or hangs) leaves it
 * `running` under a lease that expires. Each such attempt is counted at claim; once they are spent the operation is
 * quarantined instead of being claimed again, and until then a recovered operation runs alone. Each "dead" process
 * here is a runner that claims and never finishes, as a SIGKILLed process would.
 */
import { Writable } from "node:stream";
import { CpOperationView } from "@molecule/contracts";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOperationRunner } from "./app.ts";
import { cpOperations } from "./db/schema.ts";
import { OperationRunner } from "./services/runner.ts";
import { performWorkspaceOperation, workspaceOperationFailed } from "./services/workspace-operations.ts";
import {
  createTestControlPlane,
  type TenantIdentity,
  type TestControlPlane,
  workspaceSpec,
} from "./testing.ts";

let cp: TestControlPlane;
let fake: FakeProvisioner;
let org: TenantIdentity;
let other: TenantIdentity;

beforeAll(async () => {
  fake = createFakeProvisioner();
  cp = await createTestControlPlane({ provisioner: fake });
  org = await cp.createOrg("quarantine");
  other = await cp.createOrg("bystander");
  await cp.runner.drain();
});
afterAll(() => cp.close());

async function provision(identity: TenantIdentity): Promise<{ workspaceId: string; operationId: string }> {
  const workspaceId = cp.deps.ids.next("ws");
  const accepted = await cp.tenant(identity, "POST", "/cp/workspaces/provision", {
    body: workspaceSpec(workspaceId),
  });
  expect(accepted.status, accepted.text).toBe(202);
  return { workspaceId, operationId: accepted.body.operation.id };
}

async function view(identity: TenantIdentity, operationId: string) {
  const shown = await cp.tenant(identity, "GET", `/cp/operations/${operationId}`);
  expect(shown.status).toBe(200);
  return CpOperationView.parse(shown.body);
}

async function row(operationId: string) {
  const [found] = await cp.db.db.select().from(cpOperations).where(eq(cpOperations.id, operationId));
  if (!found) throw new Error(`operation ${operationId} not found`);
  return found;
}

async function workspaceState(identity: TenantIdentity, workspaceId: string) {
  const listed = await cp.tenant(identity, "GET", "/cp/workspaces");
  return listed.body.workspaces.find((w: { workspace_id: string }) => w.workspace_id === workspaceId)?.state;
}

/** `count` processes in turn claim the operation and die in its attempt; the clock then passes the last lease. */
async function dieInAttempts(operationId: string, count: number): Promise<void> {
  for (let attempt = 1; attempt <= count; attempt++) {
    const dead = createOperationRunner(cp.deps, `dead-${operationId}-${attempt}`);
    expect((await dead.claim())?.id).toBe(operationId);
    cp.clock.advance(cp.deps.settings.operationLeaseMs + 1_000);
  }
}

/** A runner as a restarted process has it, which tells which operations it performed and what it logged. */
function survivor() {
  const performed: string[] = [];
  const lines: { level: number; msg: string; operationId?: string; attempts?: number }[] = [];
  const logger = pino(
    { level: "info" },
    new Writable({
      write(chunk, _encoding, done) {
        lines.push(JSON.parse(String(chunk)));
        done();
      },
    }),
  );
  const deps = { ...cp.deps, logger };
  const runner = new OperationRunner(
    deps,
    "survivor",
    (operation, step, scrub, attempt) => {
      performed.push(operation.id);
      return performWorkspaceOperation(deps, operation, step, scrub, attempt);
    },
    (operation, error) => workspaceOperationFailed(deps, operation, error),
  );
  return { runner, performed, lines };
}

describe("an operation whose attempts all died with their process", () => {
  it("is quarantined without running again: failed with the code, the workspace failed, one error line", async () => {
    const max = cp.deps.settings.operationMaxAttempts;
    const poison = await provision(org);
    await dieInAttempts(poison.operationId, max);
    expect(await row(poison.operationId)).toMatchObject({ status: "running", attempts: max });

    const { runner, performed, lines } = survivor();
    expect(await runner.drain()).toBe(0);
    expect(performed).toEqual([]);
    expect(fake.inspect(poison.workspaceId)).toBeUndefined();

    const ended = await row(poison.operationId);
    expect(ended).toMatchObject({ status: "failed", attempts: max, lockedBy: null, lockedUntil: null });
    expect(ended.finishedAt).not.toBeNull();
    const shown = await view(org, poison.operationId);
    expect(shown.status).toBe("failed");
    expect(shown.error).toEqual({
      code: "quarantined",
      message: `attempt ${max} of ${max} never finished (the process running it stopped or hung); the operation was quarantined and will not run again`,
      retryable: false,
    });
    expect(await workspaceState(org, poison.workspaceId)).toBe("failed");

    const logged = lines.filter((line) => line.operationId === poison.operationId);
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: 50, attempts: max });
    expect(logged[0]?.msg).toBe(`operation quarantined: ${shown.error?.message}`);

    // Nothing is left claimable, and the workspace's next request runs: a delete of the failed workspace.
    expect(await runner.claim()).toBeNull();
    const removed = await cp.tenant(org, "DELETE", `/cp/workspaces/${poison.workspaceId}`);
    expect(removed.status).toBe(202);
    expect(await runner.drain()).toBe(1);
    expect((await view(org, removed.body.operation.id)).status).toBe("succeeded");
  });

  it("with attempts left it runs again, and succeeds", async () => {
    const max = cp.deps.settings.operationMaxAttempts;
    const recovered = await provision(org);
    await dieInAttempts(recovered.operationId, max - 1);

    const { runner, performed, lines } = survivor();
    expect(await runner.drain()).toBe(1);
    expect(performed).toEqual([recovered.operationId]);
    expect(await row(recovered.operationId)).toMatchObject({
      status: "succeeded",
      attempts: max,
      error: null,
    });
    expect(await workspaceState(org, recovered.workspaceId)).toBe("running");
    expect(fake.inspect(recovered.workspaceId)?.instance?.state).toBe("running");
    expect(lines.filter((line) => line.level >= 50)).toEqual([]);
  });

  it("a recovered operation runs alone: it waits for running work, and nothing else is claimed beside it", async () => {
    const recovered = await provision(org);
    await createOperationRunner(cp.deps, "dead-before-busy").claim();
    const busy = await provision(other);
    const { runner } = survivor();
    // The recovered operation's lease has not expired yet: the survivor takes the other org's work.
    const first = await runner.claim();
    expect(first?.id).toBe(busy.operationId);
    cp.clock.advance(cp.deps.settings.operationLeaseMs + 1_000);
    // Now it could be recovered, but not beside running work (if it killed the process, that would die with it).
    expect(await runner.claim()).toBeNull();
    if (first) await runner.execute(first);

    const queued = await provision(other);
    const second = await runner.claim();
    expect(second?.id).toBe(recovered.operationId);
    expect(await runner.claim()).toBeNull(); // the queued one waits while the recovered one runs
    if (second) await runner.execute(second);
    const third = await runner.claim();
    expect(third?.id).toBe(queued.operationId);
    if (third) await runner.execute(third);

    expect(await row(recovered.operationId)).toMatchObject({ status: "succeeded", attempts: 2 });
    for (const [identity, done] of [
      [org, recovered],
      [other, busy],
      [other, queued],
    ] as const) {
      expect((await view(identity, done.operationId)).status).toBe("succeeded");
    }
  });
});

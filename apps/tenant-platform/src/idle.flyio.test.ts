/**
 * Idle suspend and wake on request on the Fly emulator: an idle workspace's machine is suspended (Fly's suspend), an
 * A2A request resumes it (one start) and is delivered once its agent heartbeats again. A machine too large for Fly's
 * suspend is stopped instead: the workspace is still shown `suspended` (the reason says so) and wakes the same way.
 * The machines run no agent code: each workspace's agent is an SDK server in this process (test-support/hand-agents.ts).
 */

import { operations, workspaces } from "@molecule/db";
import type { FlyHandle } from "@molecule/provisioner-core";
import { and, eq } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type FlyHarness,
  startFlyHarness,
  TEST_APP,
  TEST_DEPLOYMENT,
} from "../../../packages/provisioner-core/src/flyio/testkit.ts";
import { HandAgents, workspaceStatusBecomes } from "../../../test-support/hand-agents.ts";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";

let fly: FlyHarness;
let platform: TestPlatform;
let agents: HandAgents;

beforeAll(async () => {
  fly = await startFlyHarness();
  platform = await createTestPlatform(fly.provisioner, {
    deployment: TEST_DEPLOYMENT,
    allowedRuntimes: ["hermes"],
  });
  await platform.listen();
  agents = new HandAgents(platform);
});

afterEach(() => agents.stopBeating());

afterAll(async () => {
  await agents?.close();
  await platform?.close();
  await fly?.close();
});

const statusBecomes = (id: string, status: string) => workspaceStatusBecomes(platform, id, status);

async function machineState(id: string): Promise<string | undefined> {
  const [row] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
  const machineId = (row?.handle as FlyHandle | null)?.machineId;
  return fly.emulator.machines(TEST_APP).find((machine) => machine.id === machineId)?.state;
}

async function startOperations(id: string): Promise<number> {
  const rows = await platform.deps.db
    .select({ id: operations.id })
    .from(operations)
    .where(and(eq(operations.workspaceId, id), eq(operations.kind, "start")));
  return rows.length;
}

async function idleWorkspace(name: string, tier: number) {
  const created = await platform.call("POST", "/workspaces", {
    body: { name, runtime: "hermes", tier, idle_suspend_seconds: 60 },
  });
  expect(created.status).toBe(202);
  const id = created.body.workspace.id as string;
  await statusBecomes(id, "awaiting_agent");
  const ws = await agents.register(id, name);
  expect(await machineState(id)).toBe("started");
  platform.clock.advance(61_000);
  expect(await platform.idle.sweep()).toContain(id);
  return ws;
}

function send(text: string) {
  return {
    jsonrpc: "2.0",
    id: 1,
    method: "message/send",
    params: { message: { role: "user", messageId: `m-${text}`, parts: [{ kind: "text", text }] } },
  };
}

describe("idle suspend and wake on the Fly emulator", () => {
  it("an idle workspace's machine is suspended; A2A requests resume it with one start and are delivered", async () => {
    const ws = await idleWorkspace("fly-sleeper", 2);
    const suspended = await statusBecomes(ws.id, "suspended");
    expect(suspended.statusReason).toBe("idle for 60 s");
    expect(await machineState(ws.id)).toBe("suspended");

    agents.beating(ws, async () => (await machineState(ws.id)) === "started");
    const answers = await Promise.all(
      [1, 2, 3].map((i) =>
        platform.callServed("POST", `/workspaces/${ws.id}/a2a`, { body: send(`fly ${i}`) }),
      ),
    );
    for (const [i, answer] of answers.entries()) {
      expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      expect(JSON.stringify(answer.body)).toContain(`fly-sleeper: fly ${i + 1}`);
    }
    expect(await machineState(ws.id)).toBe("started");
    expect(await startOperations(ws.id)).toBe(1);
  });

  it("a machine too large for Fly's suspend is stopped instead, shown suspended with the reason, and woken the same way", async () => {
    const ws = await idleWorkspace("fly-big", 4);
    const suspended = await statusBecomes(ws.id, "suspended");
    expect(suspended.statusReason).toContain("stopped instead");
    expect(await machineState(ws.id)).toBe("stopped");

    agents.beating(ws, async () => (await machineState(ws.id)) === "started");
    const answer = await platform.callServed("POST", `/workspaces/${ws.id}/a2a`, { body: send("big") });
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    expect(JSON.stringify(answer.body)).toContain("fly-big: big");
    expect(await machineState(ws.id)).toBe("started");
    expect(await startOperations(ws.id)).toBe(1);
  });
});

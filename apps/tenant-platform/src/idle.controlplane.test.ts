/**
 * Idle suspend and wake for a SaaS tenant's workspaces (the controlplane backend, against the control plane's
 * emulator over real signed HTTP): the idle sweep and the wake run in the tenant, which asks the control plane to
 * suspend and to start as for any request. The emulated workspace backend cannot suspend, so the control plane stops
 * the workspace instead: the tenant still shows it `suspended` (the reason says so) and an A2A request wakes it.
 */
import { operations } from "@molecule/db";
import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ControlPlaneHarness,
  startControlPlaneHarness,
} from "../../../packages/provisioner-core/src/controlplane/testkit.ts";
import { HandAgents, workspaceStatusBecomes } from "../../../test-support/hand-agents.ts";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";

let cp: ControlPlaneHarness;
let platform: TestPlatform;
let agents: HandAgents;

beforeAll(async () => {
  cp = await startControlPlaneHarness({ emulator: { suspend: false } });
  platform = await createTestPlatform(cp.provisioner, { orgId: cp.emulator.orgId });
  await platform.listen();
  agents = new HandAgents(platform);
});

afterAll(async () => {
  await agents?.close();
  await platform?.close();
  await cp?.close();
});

describe("idle suspend and wake through the control plane", () => {
  it("an idle workspace the control plane stops instead is shown suspended and woken by an A2A request", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "saas-sleeper", runtime: "echo", idle_suspend_seconds: 60 },
    });
    expect(created.status).toBe(202);
    const id = created.body.workspace.id as string;
    await workspaceStatusBecomes(platform, id, "awaiting_agent");
    const ws = await agents.register(id, "saas-sleeper");
    expect(cp.emulator.workspace(id)?.state).toBe("running");

    platform.clock.advance(61_000);
    expect(await platform.idle.sweep()).toEqual([id]);
    const suspended = await workspaceStatusBecomes(platform, id, "suspended");
    expect(suspended.statusReason).toContain("stopped");
    expect(cp.emulator.workspace(id)?.state).toBe("stopped");

    agents.beating(ws, async () => cp.emulator.workspace(id)?.state === "running");
    const answer = await platform.callServed("POST", `/workspaces/${id}/a2a`, {
      body: {
        jsonrpc: "2.0",
        id: 1,
        method: "message/send",
        params: { message: { role: "user", messageId: "m-1", parts: [{ kind: "text", text: "wake up" }] } },
      },
    });
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    expect(JSON.stringify(answer.body)).toContain("saas-sleeper: wake up");
    expect(cp.emulator.workspace(id)?.state).toBe("running");
    const starts = await platform.deps.db
      .select({ id: operations.id })
      .from(operations)
      .where(and(eq(operations.workspaceId, id), eq(operations.kind, "start")));
    expect(starts).toHaveLength(1);
  });
});

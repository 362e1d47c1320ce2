/**
 * Idle suspend and wake on request on the real Docker engine: a workspace idle past its (tiny) idle_suspend_seconds
 * is suspended by the idle loop (its container paused), and A2A requests through the served proxy wake it (the
 * container thawed, the agent heartbeating again) and are delivered. The idle loop runs throughout, so a woken
 * workspace goes back to sleep two seconds after its last message, ready for the next case.
 */
import { randomBytes } from "node:crypto";
import { A2A_PROXY_ERROR_CODES } from "@molecule/contracts";
import { operations } from "@molecule/db";
import { resourceName } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createDockerTestPlatform,
  removeDeployment,
  statusBecomes as statusBecomesOf,
} from "../test-support/docker-platform.ts";
import { ADMIN_TOKEN, errorOf, type TestPlatform } from "../test-support/platform.ts";

const docker = new Dockerode();
const deployment = `e2e-idle-${randomBytes(4).toString("hex")}`;
let platform: TestPlatform;
let id: string;

const statusBecomes = (status: string) => statusBecomesOf(platform, docker, id, status);

function message(text: string, method = "message/send") {
  return {
    jsonrpc: "2.0",
    id: 1,
    method,
    params: { message: { role: "user", messageId: `m-${text}`, parts: [{ kind: "text", text }] } },
  };
}

async function startOperations(): Promise<number> {
  const rows = await platform.database.db
    .select({ id: operations.id })
    .from(operations)
    .where(and(eq(operations.workspaceId, id), eq(operations.kind, "start")));
  return rows.length;
}

async function paused(): Promise<boolean> {
  return (await docker.getContainer(resourceName(id)).inspect()).State.Paused;
}

beforeAll(async () => {
  platform = await createDockerTestPlatform({ docker, deployment, idleSweepIntervalMs: 500 });
  await platform.listen();
  const created = await platform.call("POST", "/workspaces", {
    body: { name: "sleepy", runtime: "echo", idle_suspend_seconds: 2 },
  });
  expect(created.status).toBe(202);
  id = created.body.workspace.id;
});

afterAll(async () => {
  await platform?.close();
  await removeDeployment(docker, deployment);
});

describe("idle suspend and wake on the real Docker engine", () => {
  it("an idle workspace is suspended (its container paused), shown suspended, not offline", async () => {
    await statusBecomes("online");
    const suspended = await statusBecomes("suspended");
    expect(suspended.statusReason).toBe("idle for 2 s");
    expect(await paused()).toBe(true);
    // Its heartbeats stopped with it: the liveness sweep leaves it suspended.
    await platform.sweeper.sweep();
    expect((await platform.call("GET", `/workspaces/${id}`)).body.status).toBe("suspended");
  });

  it("an A2A request wakes it and is answered; concurrent requests share one start", async () => {
    await statusBecomes("suspended");
    const before = await startOperations();
    const answers = await Promise.all(
      Array.from({ length: 4 }, (_, i) =>
        platform.callServed("POST", `/workspaces/${id}/a2a`, { body: message(`wake ${i}`) }),
      ),
    );
    for (const [i, answer] of answers.entries()) {
      expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      expect(JSON.stringify(answer.body)).toContain(`echo: wake ${i}`);
    }
    expect(await startOperations()).toBe(before + 1);
  });

  it("a stream sent while it sleeps is streamed once it is back", async () => {
    await statusBecomes("suspended");
    expect(await paused()).toBe(true);
    const before = await startOperations();
    const response = await fetch(`${platform.deps.settings.publicUrl}/workspaces/${id}/a2a`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify(message("stream", "message/stream")),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    // The echo agent streams its reply word by word, then completes the task.
    const events = await response.text();
    expect(events).toContain('"text":"echo: "');
    expect(events).toContain('"text":"stream"');
    expect(events).toContain('"state":"completed"');
    expect(await startOperations()).toBe(before + 1);
  });

  it("past the wake timeout the caller gets 503 wake_timeout with Retry-After, and the wake still completes", async () => {
    await statusBecomes("suspended");
    const before = await startOperations();
    platform.deps.settings.a2aWakeTimeoutMs = 1;
    let answer: Awaited<ReturnType<TestPlatform["callServed"]>>;
    try {
      answer = await platform.callServed("POST", `/workspaces/${id}/a2a`, { body: message("too soon") });
    } finally {
      delete platform.deps.settings.a2aWakeTimeoutMs;
    }
    expect(answer.status).toBe(503);
    expect(answer.headers.get("retry-after")).toBe("5");
    expect(answer.body.error.code).toBe(A2A_PROXY_ERROR_CODES.wake_timeout);
    expect(errorOf(answer).code).toBe("wake_timeout");
    await statusBecomes("online");
    expect(await paused()).toBe(false);
    expect(await startOperations()).toBe(before + 1);
  });

  it("POST /workspaces/:id/start wakes it too", async () => {
    await statusBecomes("suspended");
    expect((await platform.call("POST", `/workspaces/${id}/start`)).status).toBe(202);
    await statusBecomes("online");
    expect(await paused()).toBe(false);
  });
});

/**
 * Idle suspend and wake on request over the fake backend (the real Docker engine and the Fly emulator have their own
 * tests: e2e/idle-docker.test.ts, idle.flyio.test.ts). Agents are SDK A2A servers in this process; their heartbeats
 * are sent by the test (`beating`), as an agent's loop would, so a woken workspace comes back online.
 */
import { A2A_PROXY_ERROR_CODES } from "@molecule/contracts";
import { operations, workspaces } from "@molecule/db";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { and, eq } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { HandAgents, workspaceStatusBecomes } from "../../../test-support/hand-agents.ts";
import { metricValue } from "../../../test-support/metrics.ts";
import {
  ADMIN_TOKEN,
  createTestPlatform,
  errorOf,
  type TestPlatform,
} from "../../../test-support/platform.ts";
import { waitFor } from "../../../test-support/wait.ts";

let platform: TestPlatform;
let replica: TestPlatform;
let agents: HandAgents;

interface Ws {
  id: string;
  token: string;
}

beforeAll(async () => {
  platform = await createTestPlatform(createFakeProvisioner(), { idleSuspendAfterMs: 120_000 });
  await platform.listen();
  agents = new HandAgents(platform);
  // A second replica on the same database: it serves requests but runs no operations of its own.
  replica = await createTestPlatform(
    createFakeProvisioner(),
    { idleSuspendAfterMs: 120_000 },
    { database: platform.database },
  );
});

afterEach(() => agents.stopBeating());

afterAll(async () => {
  await agents?.close();
  await replica?.close();
  await platform?.close();
});

function send(text: string, method = "message/send") {
  return {
    jsonrpc: "2.0",
    id: 1,
    method,
    params: { message: { role: "user", messageId: `m-${text}`, parts: [{ kind: "text", text }] } },
  };
}

async function addWorkspace(name: string, extra: Record<string, unknown> = {}): Promise<Ws> {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo", ...extra } });
  expect(created.status).toBe(202);
  const id = created.body.workspace.id as string;
  await statusBecomes(id, "awaiting_agent");
  return agents.register(id, name);
}

const beating = (ws: Ws) => agents.beating(ws);
const statusBecomes = (id: string, status: string) => workspaceStatusBecomes(platform, id, status);

async function row(id: string) {
  const [found] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
  if (!found) throw new Error(`no workspace ${id}`);
  return found;
}

/** How many A2A requests waited for a wake and ended `outcome`, by the platform's own metrics. */
async function wakeWaits(outcome: string): Promise<number> {
  const response = await platform.app.request("/metrics", {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  const text = await response.text();
  return metricValue(text, "molecule_a2a_wake_wait_seconds_count", { outcome });
}

async function startOperations(id: string): Promise<number> {
  const rows = await platform.deps.db
    .select({ id: operations.id })
    .from(operations)
    .where(and(eq(operations.workspaceId, id), eq(operations.kind, "start")));
  return rows.length;
}

/** Idles `ws` past `seconds` on the platform's clock and runs the sweep until it is suspended. */
async function suspendIdle(ws: Ws, seconds: number): Promise<void> {
  platform.clock.advance((seconds + 1) * 1000);
  expect(await platform.idle.sweep()).toContain(ws.id);
  await statusBecomes(ws.id, "suspended");
}

describe("idle suspend", () => {
  it("suspends a workspace idle past its idle_suspend_seconds, not before; A2A and `active` heartbeats count", async () => {
    const ws = await addWorkspace("idler", { idle_suspend_seconds: 600 });
    const other = await addWorkspace("busy-caller", { idle_suspend_seconds: 0 });
    expect((await platform.call("GET", `/workspaces/${ws.id}`)).body.idleSuspendSeconds).toBe(600);

    platform.clock.advance(400_000);
    // A message from another workspace to it: activity of both ends.
    const answered = await platform.callServed("POST", `/workspaces/${ws.id}/a2a`, {
      token: other.token,
      body: send("still there?"),
    });
    expect(answered.status).toBe(200);
    platform.clock.advance(400_000);
    expect(await platform.idle.sweep()).not.toContain(ws.id);
    const view = (await platform.call("GET", `/workspaces/${ws.id}`)).body;
    expect(view.status).toBe("online");
    expect(view.lastActivityAt).not.toBeNull();

    // The agent reports work of its own: it is not idle either.
    const beat = await platform.call("POST", "/registry/heartbeat", {
      token: ws.token,
      body: { workspace_id: ws.id, active: true },
    });
    expect(beat.status).toBe(200);
    platform.clock.advance(400_000);
    expect(await platform.idle.sweep()).not.toContain(ws.id);

    platform.clock.advance(201_000);
    expect(await platform.idle.sweep()).toEqual([ws.id]);
    await statusBecomes(ws.id, "suspended");
    const suspended = await row(ws.id);
    expect(suspended.status).toBe("suspended");
    expect(suspended.statusReason).toBe("idle for 600 s");
    // idle_suspend_seconds 0 is never suspended, whatever IDLE_SUSPEND_AFTER says
    expect((await row(other.id)).status).toBe("online");
  });

  it("a call longer than the idle time keeps both ends from being suspended until it ends", async () => {
    let answerNow: () => void = () => undefined;
    const answering = new Promise<void>((resolve) => {
      answerNow = resolve;
    });
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "slow-thinker", runtime: "echo", idle_suspend_seconds: 60 },
    });
    const id = created.body.workspace.id as string;
    await statusBecomes(id, "awaiting_agent");
    let received: () => void = () => undefined;
    const agentHasIt = new Promise<void>((resolve) => {
      received = resolve;
    });
    const slow = await agents.register(id, "slow-thinker", () => {
      received();
      return answering;
    });
    const caller = await addWorkspace("patient-caller", { idle_suspend_seconds: 60 });
    const call = platform.callServed("POST", `/workspaces/${slow.id}/a2a`, {
      token: caller.token,
      body: send("take your time"),
    });
    // The agent has the message (its answer is held): time passes far beyond both idle times.
    await agentHasIt;
    platform.clock.advance(300_000);
    const during = await platform.idle.sweep();
    expect(during).not.toContain(slow.id);
    expect(during).not.toContain(caller.id);
    answerNow();
    const answer = await call;
    expect(answer.status).toBe(200);
    expect(JSON.stringify(answer.body)).toContain("slow-thinker: take your time");
    // Idle from the answer on.
    platform.clock.advance(61_000);
    expect(await platform.idle.sweep()).toEqual(expect.arrayContaining([slow.id, caller.id]));
  });

  it("a workspace created without idle_suspend_seconds follows IDLE_SUSPEND_AFTER; with the setting off, never", async () => {
    const ws = await addWorkspace("default-idle");
    expect((await platform.call("GET", `/workspaces/${ws.id}`)).body.idleSuspendSeconds).toBeNull();
    platform.clock.advance(60_000);
    expect(await platform.idle.sweep()).not.toContain(ws.id);
    platform.deps.settings.idleSuspendAfterMs = null;
    platform.clock.advance(3_600_000);
    try {
      expect(await platform.idle.sweep()).not.toContain(ws.id);
    } finally {
      platform.deps.settings.idleSuspendAfterMs = 120_000;
    }
    expect(await platform.idle.sweep()).toContain(ws.id);
    await statusBecomes(ws.id, "suspended");
  });

  it("a suspended workspace is not marked offline by the liveness sweep, however old its last heartbeat", async () => {
    const ws = await addWorkspace("sleeper", { idle_suspend_seconds: 30 });
    await suspendIdle(ws, 30);
    platform.clock.advance(10 * platform.deps.settings.staleAfterMs);
    await platform.sweeper.markStale();
    await platform.sweeper.checkBackend();
    expect((await row(ws.id)).status).toBe("suspended");
  });

  it("refuses a bad idle_suspend_seconds with a 400 naming the field, and creates nothing", async () => {
    const before = (await platform.call("GET", "/workspaces")).body.workspaces.length;
    for (const value of [-1, 1.5, "60", 31 * 24 * 3600, true]) {
      const refused = await platform.call("POST", "/workspaces", {
        body: { name: "bad", runtime: "echo", idle_suspend_seconds: value },
      });
      expect(refused.status, String(value)).toBe(400);
      expect(errorOf(refused).code).toBe("bad_request");
      expect(errorOf(refused).message).toContain("idle_suspend_seconds");
    }
    const external = await platform.call("POST", "/workspaces", {
      body: { name: "remote", external: true, idle_suspend_seconds: 60 },
    });
    expect(external.status).toBe(400);
    expect(errorOf(external).message).toContain("idle_suspend_seconds");
    expect((await platform.call("GET", "/workspaces")).body.workspaces.length).toBe(before);
    // null: off, like 0
    const off = await platform.call("POST", "/workspaces", {
      body: { name: "never-idle", runtime: "echo", idle_suspend_seconds: null },
    });
    expect(off.status).toBe(202);
    expect(off.body.idleSuspendSeconds).toBe(0);
  });
});

describe("idle suspend with two replicas", () => {
  /** Moves both replicas' clocks together (the first call also brings the replica's to the platform's). */
  function advanceBoth(ms: number): void {
    replica.clock.advance(platform.clock.now().getTime() - replica.clock.now().getTime());
    platform.clock.advance(ms);
    replica.clock.advance(ms);
  }

  it("a message another replica has just delivered, and not yet written, keeps its target from being suspended", async () => {
    const ws = await addWorkspace("busy-elsewhere", { idle_suspend_seconds: 30 });
    advanceBoth(31_000);
    const answered = await replica.call("POST", `/workspaces/${ws.id}/a2a`, {
      body: send("from the other side"),
    });
    expect(answered.status).toBe(200);
    // The replica has the message in memory only; it writes it on its own timer, as a served replica does.
    expect(replica.activity.buffered).toBeGreaterThan(0);
    replica.activity.start();
    try {
      expect(await platform.idle.sweep()).not.toContain(ws.id);
    } finally {
      await replica.activity.stop();
    }
    expect((await row(ws.id)).status).toBe("online");
    // Idle from that message on, it is suspended.
    advanceBoth(31_000);
    expect(await platform.idle.sweep()).toContain(ws.id);
    await statusBecomes(ws.id, "suspended");
  });

  it("a call another replica has in flight keeps its target from being suspended", async () => {
    let answerNow: () => void = () => undefined;
    const answering = new Promise<void>((resolve) => {
      answerNow = resolve;
    });
    let received: () => void = () => undefined;
    const agentHasIt = new Promise<void>((resolve) => {
      received = resolve;
    });
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "thinking-elsewhere", runtime: "echo", idle_suspend_seconds: 30 },
    });
    const id = created.body.workspace.id as string;
    await statusBecomes(id, "awaiting_agent");
    await agents.register(id, "thinking-elsewhere", () => {
      received();
      return answering;
    });
    advanceBoth(0);
    const call = replica.call("POST", `/workspaces/${id}/a2a`, { body: send("take your time") });
    await agentHasIt;
    // Far past the idle time while the replica's call is open; the replica has written nothing of it yet.
    advanceBoth(120_000);
    replica.activity.start();
    try {
      expect(await platform.idle.sweep()).not.toContain(id);
    } finally {
      answerNow();
      expect((await call).status).toBe(200);
      await replica.activity.stop();
    }
    expect((await row(id)).status).toBe("online");
  });
});

describe("wake on request", () => {
  it("concurrent A2A requests on two replicas wake a suspended workspace with one start and are all delivered", async () => {
    const ws = await addWorkspace("wake-me", { idle_suspend_seconds: 30 });
    await suspendIdle(ws, 30);
    beating(ws);
    const wokenBefore = await wakeWaits("woken");
    const asks = Array.from({ length: 6 }, (_, i) =>
      (i % 2 === 0 ? platform : replica).call("POST", `/workspaces/${ws.id}/a2a`, {
        body: send(`ping ${i}`),
      }),
    );
    asks.push(platform.callServed("POST", `/workspaces/${ws.id}/a2a`, { body: send("ping served") }));
    const answers = await Promise.all(asks);
    for (const [i, answer] of answers.entries()) {
      expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      expect(JSON.stringify(answer.body)).toContain(i === 6 ? "wake-me: ping served" : `wake-me: ping ${i}`);
    }
    expect(await startOperations(ws.id)).toBe(1);
    expect((await row(ws.id)).status).toBe("online");
    // The requests this process served each waited (the replica counts its own).
    expect(await wakeWaits("woken")).toBe(wokenBefore + 4);
  });

  it("a stream to a suspended workspace waits for the wake, then streams", async () => {
    const ws = await addWorkspace("stream-me", { idle_suspend_seconds: 30 });
    await suspendIdle(ws, 30);
    beating(ws);
    const response = await fetch(`${platform.deps.settings.publicUrl}/workspaces/${ws.id}/a2a`, {
      method: "POST",
      headers: {
        authorization: "Bearer test-admin-token-0123456789abcdef",
        "content-type": "application/json",
      },
      body: JSON.stringify(send("stream please", "message/stream")),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(await response.text()).toContain("stream-me: stream please");
    expect(await startOperations(ws.id)).toBe(1);
  });

  it("past A2A_WAKE_TIMEOUT_SECONDS the caller gets 503 wake_timeout with Retry-After; the wake goes on", async () => {
    const ws = await addWorkspace("slow-waker", { idle_suspend_seconds: 30 });
    await suspendIdle(ws, 30);
    const timeoutsBefore = await wakeWaits("timeout");
    platform.deps.settings.a2aWakeTimeoutMs = 300;
    let timedOut: Awaited<ReturnType<TestPlatform["callServed"]>>;
    try {
      // No heartbeats: the agent does not come back in time.
      timedOut = await platform.callServed("POST", `/workspaces/${ws.id}/a2a`, { body: send("anyone?") });
    } finally {
      delete platform.deps.settings.a2aWakeTimeoutMs;
    }
    expect(timedOut.status).toBe(503);
    expect(timedOut.headers.get("retry-after")).toBe("5");
    expect(timedOut.body.error.code).toBe(A2A_PROXY_ERROR_CODES.wake_timeout);
    expect(errorOf(timedOut).code).toBe("wake_timeout");
    expect(errorOf(timedOut).message).toContain("was not back within 0.3 s");
    expect(timedOut.body.id).toBe(1);
    expect(await wakeWaits("timeout")).toBe(timeoutsBefore + 1);
    expect(await startOperations(ws.id)).toBe(1);
    // The agent comes back: the next request is delivered without another start.
    beating(ws);
    const later = await platform.callServed("POST", `/workspaces/${ws.id}/a2a`, { body: send("now?") });
    expect(later.status).toBe(200);
    expect(JSON.stringify(later.body)).toContain("slow-waker: now?");
    expect(await startOperations(ws.id)).toBe(1);
  });

  it("a caller that hangs up mid-wake stops waiting (caller_gone) long before the timeout; the wake completes for the others", async () => {
    const ws = await addWorkspace("left-waiting", { idle_suspend_seconds: 30 });
    await suspendIdle(ws, 30);
    const goneBefore = await wakeWaits("caller_gone");
    const timeoutsBefore = await wakeWaits("timeout");
    // Long enough that a wait the hang-up did not end could not pass for one it did.
    platform.deps.settings.a2aWakeTimeoutMs = 45_000;
    try {
      // A real HTTP client asks for a stream, then aborts once its request has queued the wake.
      const hangUp = new AbortController();
      const started = performance.now();
      const leaving = fetch(`${platform.deps.settings.publicUrl}/workspaces/${ws.id}/a2a`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify(send("never mind", "message/stream")),
        signal: hangUp.signal,
      });
      await waitFor("the wake to be queued", async () =>
        (await startOperations(ws.id)) === 1 ? true : undefined,
      );
      // Another caller waits for the same wake.
      const staying = platform.callServed("POST", `/workspaces/${ws.id}/a2a`, { body: send("still here") });
      hangUp.abort();
      await expect(leaving).rejects.toThrow();
      await waitFor(
        "the abandoned wait to end as caller_gone",
        async () => ((await wakeWaits("caller_gone")) === goneBefore + 1 ? true : undefined),
        15_000,
        50,
      );
      expect(performance.now() - started).toBeLessThan(45_000);
      // The in-process route (Hono) hears its request's signal the same way, and answers nobody with 499.
      const leavingInProcess = new AbortController();
      const inProcess = platform.app.request(`/workspaces/${ws.id}/a2a`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify(send("bye")),
        signal: leavingInProcess.signal,
      });
      leavingInProcess.abort();
      expect((await inProcess).status).toBe(499);
      expect(await wakeWaits("timeout")).toBe(timeoutsBefore);
      // The agent comes back: the wake the departed caller queued completes, and the other caller is answered.
      beating(ws);
      const answered = await staying;
      expect(answered.status).toBe(200);
      expect(JSON.stringify(answered.body)).toContain("left-waiting: still here");
      expect((await row(ws.id)).status).toBe("online");
      expect(await startOperations(ws.id)).toBe(1);
      expect(await wakeWaits("caller_gone")).toBe(goneBefore + 2);
    } finally {
      delete platform.deps.settings.a2aWakeTimeoutMs;
    }
  });

  it("POST /workspaces/:id/start wakes it too; a stopped workspace is not woken by A2A (503 at once)", async () => {
    const ws = await addWorkspace("started", { idle_suspend_seconds: 30 });
    await suspendIdle(ws, 30);
    beating(ws);
    const started = await platform.call("POST", `/workspaces/${ws.id}/start`);
    expect(started.status).toBe(202);
    const answer = await platform.callServed("POST", `/workspaces/${ws.id}/a2a`, { body: send("hello") });
    expect(answer.status).toBe(200);
    expect(await startOperations(ws.id)).toBe(1);

    const stopped = await addWorkspace("stopped-for-good");
    expect((await platform.call("POST", `/workspaces/${stopped.id}/stop`)).status).toBe(202);
    await statusBecomes(stopped.id, "stopped");
    const refused = await platform.callServed("POST", `/workspaces/${stopped.id}/a2a`, { body: send("hi") });
    expect(refused.status).toBe(503);
    expect(errorOf(refused).code).toBe("upstream_unavailable");
    expect(await startOperations(stopped.id)).toBe(0);
  });
});

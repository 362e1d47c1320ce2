import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { handleError, requestLog } from "@molecule/service-kit/http";
import { RateLimiter } from "@molecule/service-kit/rate-limit";
import { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { openSse, type SseFrame, type SseStream } from "../../../test-support/sse.ts";
import { identify } from "./http/auth.ts";
import type { AppEnv } from "./http/types.ts";
import { eventRoutes } from "./routes/events.ts";
import { EventBus } from "./services/events.ts";
import { WorkspaceService } from "./services/workspaces.ts";

let platform: TestPlatform;
let fake: FakeProvisioner;
let base: string;
const SECRET_VALUE = "sk-live-do-not-leak-4242424242";
/** Every byte any stream in this file delivered, checked at the end for secrets. */
const seen: string[] = [];

function open(path: string, token: string | null = ADMIN_TOKEN, lastEventId?: string): Promise<SseStream> {
  return openSse(`${base}${path}`, token, lastEventId, { onText: (text) => seen.push(text) });
}

async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function createWorkspace(name: string) {
  const created = await platform.call("POST", "/workspaces", {
    body: { name, runtime: "echo", secrets: { API_KEY: SECRET_VALUE } },
  });
  expect(created.status).toBe(202);
  return { id: created.body.workspace.id as string, operationId: created.body.operation.id as string };
}

const finishedOf = (operationId: string) => (frame: SseFrame) =>
  frame.event === "operation.finished" && frame.data.data.operationId === operationId;

const ids = (frames: SseFrame[]) => frames.map((frame) => Number(frame.id));

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake);
  base = await platform.listen();
});
afterAll(() => platform.close());

describe("event stream", () => {
  let workspaceId: string;
  let authToken: string;
  const tokens: string[] = [];

  it("streams status changes, operation steps with durations and the operation's end", async () => {
    const stream = await open("/events");
    expect(stream.status).toBe(200);
    const { id, operationId } = await createWorkspace("watched");
    workspaceId = id;
    const frames = await stream.until(finishedOf(operationId));
    stream.close();
    const mine = frames.filter((frame) => frame.data.workspaceId === id);
    const statuses = mine
      .filter((frame) => frame.event === "workspace.status")
      .map((frame) => frame.data.data);
    expect(statuses).toEqual([
      { to: "provisioning", reason: null },
      { from: "provisioning", to: "awaiting_agent", reason: null },
    ]);
    const steps = mine.filter((frame) => frame.event === "operation.step");
    expect(steps.length).toBeGreaterThan(0);
    for (const step of steps) {
      expect(step.data.data).toMatchObject({ operationId, kind: "provision", name: expect.any(String) });
      expect(step.data.data.durationMs).toBeGreaterThanOrEqual(0);
    }
    const finished = mine.find(finishedOf(operationId));
    expect(finished?.data.data).toEqual({ operationId, kind: "provision", status: "succeeded" });
    expect(mine.at(-1)).toBe(finished);
    // One process, one sequence: ids go up by one with no gaps.
    const all = ids(frames);
    expect(all).toEqual(all.map((_, index) => (all[0] ?? 0) + index));
  });

  it("reconnecting with Last-Event-ID delivers exactly the missed events, in order", async () => {
    const first = await open("/events");
    const boot = fake.inspect(workspaceId)?.instance?.env.WORKSPACE_BOOT_TOKEN as string;
    tokens.push(boot);
    const registered = await platform.call("POST", "/registry/register", {
      token: boot,
      body: { id: workspaceId },
    });
    authToken = registered.body.auth_token;
    tokens.push(authToken);
    await platform.call("POST", "/registry/heartbeat", {
      token: authToken,
      body: { workspace_id: workspaceId },
    });
    const seenBefore = await first.until(
      (frame) => frame.event === "workspace.status" && frame.data.data.to === "online",
    );
    const lastSeen = Number(seenBefore.at(-1)?.id);
    first.close();
    await waitFor(() => platform.deps.events.subscriberCount === 0);

    // While disconnected: the agent comes online, then the workspace is stopped and started again.
    const stop = await platform.call("POST", `/workspaces/${workspaceId}/stop`);
    await waitFor(
      async () =>
        (await platform.call("GET", `/operations/${stop.body.operation.id}`)).body.status === "succeeded",
    );
    const start = await platform.call("POST", `/workspaces/${workspaceId}/start`);
    await waitFor(
      async () =>
        (await platform.call("GET", `/operations/${start.body.operation.id}`)).body.status === "succeeded",
    );
    const latest = platform.deps.events.latestId;
    expect(latest).toBeGreaterThan(lastSeen);

    const resumed = await open("/events", ADMIN_TOKEN, String(lastSeen));
    const frames = await resumed.until((frame) => Number(frame.id) === latest);
    resumed.close();
    const expected = Array.from({ length: latest - lastSeen }, (_, index) => lastSeen + 1 + index);
    expect(ids(frames).slice(0, expected.length)).toEqual(expected);
    const statuses = frames
      .filter((frame) => frame.event === "workspace.status")
      .map((frame) => `${frame.data.data.from}->${frame.data.data.to}`);
    expect(statuses).toEqual([
      "online->stopping",
      "stopping->stopped",
      "stopped->provisioning",
      "provisioning->awaiting_agent",
    ]);
    expect(frames.filter((frame) => frame.event === "operation.finished")).toHaveLength(2);
  });

  it("a Last-Event-ID outside the window gets a reset event, then live events", async () => {
    const ahead = await open("/events", ADMIN_TOKEN, String(platform.deps.events.latestId + 100));
    const [reset] = await ahead.until((frame) => frame.event === "reset");
    expect(reset?.data.lastEventId).toBe(platform.deps.events.latestId);
    await platform.call("POST", "/registry/heartbeat", {
      token: authToken,
      body: { workspace_id: workspaceId },
    });
    await ahead.until((frame) => frame.event === "workspace.heartbeat");
    ahead.close();
    const garbage = await open("/events", ADMIN_TOKEN, "not-a-number");
    await garbage.until((frame) => frame.event === "reset");
    garbage.close();
  });

  it("a workspace token sees only its own workspace; no token is 401", async () => {
    expect((await open("/events", authToken)).status).toBe(403);
    expect((await open("/events", null)).status).toBe(401);
    expect((await open(`/workspaces/${workspaceId}/events`, null)).status).toBe(401);
    expect((await open(`/workspaces/${platform.deps.ids.next("ws")}/events`)).status).toBe(404);
    expect((await open("/workspaces/nope/events")).status).toBe(400);

    const own = await open(`/workspaces/${workspaceId}/events`, authToken, "0");
    expect(own.status).toBe(200);
    const other = await createWorkspace("neighbour");
    expect((await open(`/workspaces/${other.id}/events`, authToken)).status).toBe(403);
    const admin = await open(`/workspaces/${other.id}/events`, ADMIN_TOKEN, "0");
    await admin.until(finishedOf(other.operationId));
    admin.close();
    await platform.call("POST", "/registry/heartbeat", {
      token: authToken,
      body: { workspace_id: workspaceId },
    });
    const frames = await own.until(
      (frame) => frame.event === "workspace.heartbeat" && Number(frame.id) > Number(admin.frames.at(-1)?.id),
    );
    own.close();
    expect(frames.length).toBeGreaterThan(5);
    expect(frames.every((frame) => frame.data.workspaceId === workspaceId)).toBe(true);
    expect(admin.frames.every((frame) => frame.data.workspaceId === other.id)).toBe(true);
  });

  it("heartbeats missed move the workspace offline, as two events", async () => {
    const stream = await open(`/workspaces/${workspaceId}/events`);
    await waitFor(() => platform.deps.events.subscriberCount > 0);
    platform.clock.advance(91_000);
    await platform.sweeper.markStale();
    const frames = await stream.until((frame) => frame.event === "workspace.status");
    stream.close();
    expect(frames.map((frame) => frame.event)).toEqual(["workspace.heartbeat_missed", "workspace.status"]);
    expect(frames[1]?.data.data).toMatchObject({ to: "offline" });
  });

  it("no event carries a token or a secret value", () => {
    const everything = seen.join("");
    expect(everything.length).toBeGreaterThan(1000);
    for (const secret of [SECRET_VALUE, ADMIN_TOKEN, ...tokens]) expect(everything).not.toContain(secret);
  });
});

describe("a stream opened with a workspace's token ends with that token", () => {
  /** A registered workspace: its id and current bearer token. */
  async function registered(name: string): Promise<{ id: string; token: string }> {
    const { id, operationId } = await createWorkspace(name);
    await waitFor(
      async () => (await platform.call("GET", `/operations/${operationId}`)).body.status === "succeeded",
    );
    const boot = fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN as string;
    const response = await platform.call("POST", "/registry/register", { token: boot, body: { id } });
    expect(response.status).toBe(200);
    tokens.push(boot, response.body.auth_token);
    return { id, token: response.body.auth_token };
  }
  const tokens: string[] = [];
  afterAll(() => {
    const everything = seen.join("");
    for (const token of tokens) expect(everything).not.toContain(token);
  });

  it("registering again (token rotation) ends it at once with `revoked`; the admin's stream goes on", async () => {
    const agent = await registered("rotated");
    const own = await open(`/workspaces/${agent.id}/events`, agent.token);
    const admin = await open(`/workspaces/${agent.id}/events`);
    expect([own.status, admin.status]).toEqual([200, 200]);
    await waitFor(() => platform.deps.events.subscriberCount >= 2);

    // The operator registers the agent by hand: a new bearer token, the old one revoked.
    const rotated = await platform.call("POST", "/registry/register", { body: { id: agent.id } });
    expect(rotated.status).toBe(200);
    tokens.push(rotated.body.auth_token);
    const frames = await own.ended;
    expect(frames.at(-1)).toMatchObject({
      event: "revoked",
      data: { reason: expect.stringContaining("rotated") },
    });
    expect((await open(`/workspaces/${agent.id}/events`, agent.token)).status).toBe(401);

    // The new token streams; the admin's stream was never touched.
    const renewed = await open(`/workspaces/${agent.id}/events`, rotated.body.auth_token);
    expect(renewed.status).toBe(200);
    await platform.call("POST", "/registry/heartbeat", {
      token: rotated.body.auth_token,
      body: { workspace_id: agent.id },
    });
    await admin.until((frame) => frame.event === "workspace.heartbeat");
    await renewed.until((frame) => frame.event === "workspace.heartbeat");
    expect(admin.frames.some((frame) => frame.event === "revoked")).toBe(false);
    renewed.close();
    admin.close();
  });

  it("deleting the workspace (token revoked) ends it after the `removed` status, and a reconnect is 401", async () => {
    const agent = await registered("deleted");
    const own = await open(`/workspaces/${agent.id}/events`, agent.token);
    expect(own.status).toBe(200);
    await waitFor(() => platform.deps.events.subscriberCount >= 1);
    expect((await platform.call("DELETE", `/workspaces/${agent.id}`)).status).toBe(202);
    const frames = await own.ended;
    const tail = frames.slice(-2).map((frame) => [frame.event, frame.data.data?.to ?? frame.data.reason]);
    expect(tail).toEqual([
      ["workspace.status", "removed"],
      ["revoked", expect.stringContaining("revoked")],
    ]);
    expect((await open(`/workspaces/${agent.id}/events`, agent.token)).status).toBe(401);
  });

  it("a token rotated by another platform process ends the stream at its next keepalive", async () => {
    const agent = await registered("elsewhere");
    // This process: its own event bus (nothing crosses between processes but the database), keepalives every 20 ms.
    const replica = new Hono<AppEnv>();
    const deps = { ...platform.deps, events: new EventBus() };
    replica.use("*", requestLog(deps.logger));
    replica.use("*", identify(deps, new RateLimiter("api", 0, { now: () => 0 }))); // no limit here
    replica.route("/", eventRoutes(deps, new WorkspaceService(deps), 20));
    replica.onError(handleError);
    const response = await replica.request(`/workspaces/${agent.id}/events`, {
      headers: { authorization: `Bearer ${agent.token}` },
    });
    expect(response.status).toBe(200);
    const reader = (response.body as ReadableStream<Uint8Array>)
      .pipeThrough(new TextDecoderStream())
      .getReader();
    const first = await reader.read();
    expect(first.value).toContain(": connected");

    // The other process (the test platform) rotates the token.
    const rotated = await platform.call("POST", "/registry/register", { body: { id: agent.id } });
    tokens.push(rotated.body.auth_token);
    let rest = "";
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) break;
      rest += chunk.value;
    }
    expect(rest).toMatch(/event: revoked\n/);
    expect(deps.events.subscriberCount).toBe(0);
  });
});

describe("EventBus", () => {
  it("tells a workspace's credential watchers, and only them, until they stop watching", () => {
    const bus = new EventBus();
    const calls: string[] = [];
    const stopA = bus.watchCredentials("ws_a", () => calls.push("a1"));
    bus.watchCredentials("ws_a", () => calls.push("a2"));
    bus.watchCredentials("ws_b", () => calls.push("b"));
    bus.credentialsChanged("ws_a");
    stopA();
    bus.credentialsChanged("ws_a");
    bus.credentialsChanged("ws_c");
    expect(calls).toEqual(["a1", "a2", "a2"]);
    expect(bus.latestId).toBe(0);
  });

  it("replays after an id inside the window, resets outside it, filters by workspace", () => {
    const bus = new EventBus(3);
    for (const workspaceId of ["ws_a", "ws_b", "ws_a", "ws_a", "ws_b"]) {
      bus.publish({ type: "workspace.heartbeat", workspaceId, data: {} });
    }
    const live: number[] = [];
    const inside = bus.subscribe({ workspaceId: "ws_a" }, (event) => live.push(event.id), 2);
    expect(inside.reset).toBe(false);
    expect(inside.replay.map((event) => event.id)).toEqual([3, 4]);
    expect(bus.subscribe({}, () => {}, 1).reset).toBe(true);
    expect(bus.subscribe({}, () => {}, 6).reset).toBe(true);
    expect(bus.subscribe({}, () => {}, 5).replay).toEqual([]);
    bus.publish({ type: "workspace.heartbeat", workspaceId: "ws_b", data: {} });
    bus.publish({ type: "workspace.heartbeat", workspaceId: "ws_a", data: {} });
    expect(live).toEqual([7]);
    let closed = false;
    bus.subscribe(
      {},
      () => {},
      undefined,
      () => {
        closed = true;
      },
    );
    bus.close();
    expect(closed).toBe(true);
    expect(bus.subscriberCount).toBe(0);
  });
});

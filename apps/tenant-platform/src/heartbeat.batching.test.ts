import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import type { PlatformEvent } from "./services/events.ts";

/**
 * Steady-state heartbeats are answered from memory and written in one statement per flush (services/heartbeats.ts).
 * The flush is driven by hand here (the platform's timer only runs once it listens), so nothing waits for time.
 */
let platform: TestPlatform;
let fake: FakeProvisioner;

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake, { staleAfterMs: 90_000 });
});
afterAll(() => platform.close());

/** A registered agent whose workspace is online and whose token memory knows (two beats: the move, then steady). */
async function steadyAgent(name: string): Promise<{ id: string; token: string }> {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  await platform.runner.drain();
  const id: string = created.body.workspace.id;
  const boot = fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN;
  const token: string = (await platform.call("POST", "/registry/register", { token: boot, body: { id } }))
    .body.auth_token;
  for (let i = 0; i < 2; i++) expect((await beat(token, id)).status).toBe(200);
  await platform.heartbeats.flush();
  return { id, token };
}

const beat = (token: string, id: string, body: Record<string, unknown> = {}) =>
  platform.call("POST", "/registry/heartbeat", { token, body: { workspace_id: id, ...body } });

const stored = async (id: string) => (await platform.call("GET", `/workspaces/${id}`)).body;

function heartbeatEvents(id: string): PlatformEvent[] {
  const events: PlatformEvent[] = [];
  platform.deps.events.subscribe({ workspaceId: id }, (event) => {
    if (event.type === "workspace.heartbeat") events.push(event);
  });
  return events;
}

describe("steady-state heartbeats", () => {
  it("are answered at once and written by the next flush, the newest beat's time, with one event", async () => {
    const agent = await steadyAgent("steady");
    const before = (await stored(agent.id)).lastHeartbeatAt;
    const events = heartbeatEvents(agent.id);
    let last = 0;
    for (let i = 0; i < 3; i++) {
      platform.clock.advance(1_000);
      last = platform.clock.now().getTime();
      const response = await beat(agent.token, agent.id);
      expect(response.status).toBe(200);
      expect(response.body).toEqual({ ok: true, status: "online", heartbeat_interval_seconds: 30 });
    }
    expect(platform.heartbeats.buffered).toBe(1);
    expect((await stored(agent.id)).lastHeartbeatAt).toBe(before);
    expect(events).toHaveLength(0);

    await platform.heartbeats.flush();
    const at = Date.parse((await stored(agent.id)).lastHeartbeatAt);
    expect(at).toBeGreaterThanOrEqual(last);
    expect(at).toBeLessThan(last + 1_000);
    expect(events).toHaveLength(1);
    expect(events[0]?.data).toEqual({ at: new Date(at).toISOString(), status: "ok" });
  });

  it("a beat that changes the status is written at once (degraded and back)", async () => {
    const agent = await steadyAgent("changing");
    const degraded = await beat(agent.token, agent.id, { status: "degraded", detail: "quota" });
    expect(degraded.body.status).toBe("degraded");
    expect(await stored(agent.id)).toMatchObject({ status: "degraded", statusReason: "quota" });
    expect((await beat(agent.token, agent.id)).body.status).toBe("online");
    expect((await stored(agent.id)).status).toBe("online");
  });

  it("the liveness sweep sees beats still buffered: a workspace beating in time stays online", async () => {
    const agent = await steadyAgent("buffered-sweep");
    platform.clock.advance(60_000);
    expect((await beat(agent.token, agent.id)).status).toBe(200);
    expect(platform.heartbeats.buffered).toBe(1);
    // 100 s after the last beat written, 40 s after the buffered one: only the buffered one keeps it online.
    platform.clock.advance(40_000);
    await platform.sweeper.markStale();
    expect((await stored(agent.id)).status).toBe("online");
    platform.clock.advance(91_000);
    await platform.sweeper.markStale();
    expect((await stored(agent.id)).status).toBe("offline");
    // Offline is a change: the next beat takes the synchronous path and brings it back.
    expect((await beat(agent.token, agent.id)).body.status).toBe("online");
    expect((await stored(agent.id)).status).toBe("online");
  });

  it("stopping writes what is buffered (shutdown)", async () => {
    const agent = await steadyAgent("shutdown");
    platform.clock.advance(5_000);
    const sent = platform.clock.now().getTime();
    expect((await beat(agent.token, agent.id)).status).toBe(200);
    expect(Date.parse((await stored(agent.id)).lastHeartbeatAt)).toBeLessThan(sent);
    await platform.heartbeats.stop();
    expect(Date.parse((await stored(agent.id)).lastHeartbeatAt)).toBeGreaterThanOrEqual(sent);
    // Stopped, every beat is written at once.
    platform.clock.advance(5_000);
    const later = platform.clock.now().getTime();
    expect((await beat(agent.token, agent.id)).status).toBe(200);
    expect(Date.parse((await stored(agent.id)).lastHeartbeatAt)).toBeGreaterThanOrEqual(later);
    platform.heartbeats.start({ timer: false });
  });
});

describe("a token revoked while its beats are buffered", () => {
  it("rotated by registering again: the old token is refused at once and its buffered beat writes nothing", async () => {
    const agent = await steadyAgent("rotated");
    const written = (await stored(agent.id)).lastHeartbeatAt;
    platform.clock.advance(1_000);
    expect((await beat(agent.token, agent.id)).status).toBe(200);
    expect(platform.heartbeats.buffered).toBe(1);

    const again = await platform.call("POST", "/registry/register", { body: { id: agent.id } });
    expect(again.status).toBe(200);
    const old = await beat(agent.token, agent.id);
    expect(old.status).toBe(401);
    await platform.heartbeats.flush();
    expect((await stored(agent.id)).lastHeartbeatAt).toBe(written);
    // A bad body with the revoked token is still 401, not 400.
    const bad = await platform.call("POST", "/registry/heartbeat", {
      token: agent.token,
      body: { workspace_id: 1 },
    });
    expect(bad.status).toBe(401);
    expect((await beat(again.body.auth_token, agent.id)).status).toBe(200);
  });

  it("the workspace deleted: its beats get 404 at once and the buffered one writes nothing", async () => {
    const agent = await steadyAgent("deleted");
    const written = (await stored(agent.id)).lastHeartbeatAt;
    platform.clock.advance(1_000);
    expect((await beat(agent.token, agent.id)).status).toBe(200);
    expect((await platform.call("DELETE", `/workspaces/${agent.id}`)).status).toBe(202);
    await platform.heartbeats.flush();
    expect((await stored(agent.id)).lastHeartbeatAt).toBe(written);
    expect((await beat(agent.token, agent.id)).status).toBe(404);
    await platform.runner.drain();
    expect((await beat(agent.token, agent.id)).status).toBe(401);
  });

  it("a bad body with a token memory knows is a 400", async () => {
    const agent = await steadyAgent("bad-body");
    const bad = await platform.call("POST", "/registry/heartbeat", {
      token: agent.token,
      body: { workspace_id: 1 },
    });
    expect(bad.status).toBe(400);
  });
});

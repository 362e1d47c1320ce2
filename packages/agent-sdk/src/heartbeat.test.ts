import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PlatformClient } from "./client.ts";
import { CredentialManager, CredentialsError } from "./credentials.ts";
import { runHeartbeatLoop } from "./heartbeat.ts";
import { FakePlatform } from "./testing/fake-platform.ts";

const platform = new FakePlatform();
beforeAll(() => platform.start());
afterAll(() => platform.stop());

async function registered(id: string) {
  const boot = platform.addWorkspace(id);
  const client = new PlatformClient({ platformUrl: platform.url, workspaceId: id });
  const { authToken } = await client.register(boot, { url: null, agentCard: {} });
  return { client, authToken, boot };
}

/** A sleep that records each requested delay and ends the loop after `limit` of them. */
function scriptedSleep(controller: AbortController, limit: number, onSleep?: (n: number) => void) {
  const delays: number[] = [];
  const sleep = async (ms: number) => {
    delays.push(ms);
    onSleep?.(delays.length);
    if (delays.length >= limit) controller.abort();
  };
  return { delays, sleep };
}

describe("runHeartbeatLoop", () => {
  it("beats at once, then every interval", async () => {
    const { client, authToken } = await registered("ws_hb_ok");
    const controller = new AbortController();
    const beatsAtSleep: number[] = [];
    const { delays, sleep } = scriptedSleep(controller, 3, () =>
      beatsAtSleep.push(platform.workspace("ws_hb_ok").heartbeats.length),
    );
    const stop = await runHeartbeatLoop({ client, token: () => authToken, signal: controller.signal, sleep });
    expect(stop).toEqual({ reason: "aborted" });
    expect(beatsAtSleep).toEqual([1, 2, 3]); // the first beat happened before any wait
    expect(delays).toEqual([30_000, 30_000, 30_000]);
    expect(platform.workspace("ws_hb_ok").status).toBe("online");
  });

  it("waits firstBeatInMs before its first beat when given one", async () => {
    const { client, authToken } = await registered("ws_hb_later");
    const controller = new AbortController();
    const beatsAtSleep: number[] = [];
    const { delays, sleep } = scriptedSleep(controller, 3, () =>
      beatsAtSleep.push(platform.workspace("ws_hb_later").heartbeats.length),
    );
    await runHeartbeatLoop({
      client,
      token: () => authToken,
      signal: controller.signal,
      sleep,
      firstBeatInMs: 12_000,
    });
    expect(delays).toEqual([12_000, 30_000, 30_000]);
    expect(beatsAtSleep).toEqual([0, 1, 2]);
  });

  it("heartbeats as often as the platform's answers ask when that is more often than configured", async () => {
    const { client, authToken } = await registered("ws_hb_advised");
    platform.heartbeatIntervalSeconds = 3;
    try {
      const controller = new AbortController();
      const { delays, sleep } = scriptedSleep(controller, 3);
      await runHeartbeatLoop({ client, token: () => authToken, signal: controller.signal, sleep });
      expect(delays).toEqual([3_000, 3_000, 3_000]);

      // A shorter configured interval stands: the platform's is the longest wait it tolerates.
      const faster = new AbortController();
      const quick = scriptedSleep(faster, 2);
      await runHeartbeatLoop({
        client,
        token: () => authToken,
        signal: faster.signal,
        sleep: quick.sleep,
        intervalMs: 1_000,
      });
      expect(quick.delays).toEqual([1_000, 1_000]);
    } finally {
      platform.heartbeatIntervalSeconds = undefined;
    }
  });

  it("backs off exponentially with jitter, capped, and returns to the interval after a success", async () => {
    const { client, authToken } = await registered("ws_hb_backoff");
    platform.failNext("heartbeat", 503, 503, 500, 502, 503, 503, 503, 503);
    const controller = new AbortController();
    const { delays, sleep } = scriptedSleep(controller, 10);
    await runHeartbeatLoop({
      client,
      token: () => authToken,
      signal: controller.signal,
      sleep,
      random: () => 1,
      intervalMs: 5_000,
      backoff: { baseMs: 1_000, maxMs: 60_000 },
    });
    expect(delays).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 5_000, 5_000]);
  });

  it("jitters each delay within [d/2, d]", async () => {
    const { client, authToken } = await registered("ws_hb_jitter");
    platform.failNext("heartbeat", 503, 503, 503);
    const controller = new AbortController();
    const { delays, sleep } = scriptedSleep(controller, 3);
    await runHeartbeatLoop({
      client,
      token: () => authToken,
      signal: controller.signal,
      sleep,
      random: () => 0,
    });
    expect(delays).toEqual([500, 1_000, 2_000]);
  });

  it("keeps retrying while the platform is unreachable", async () => {
    const client = new PlatformClient({ platformUrl: "http://127.0.0.1:9", workspaceId: "ws_x" });
    const controller = new AbortController();
    const events: string[] = [];
    const { delays, sleep } = scriptedSleep(controller, 4);
    const stop = await runHeartbeatLoop({
      client,
      token: () => "t",
      signal: controller.signal,
      sleep,
      random: () => 1,
      log: (_l, e) => events.push(e),
    });
    expect(stop.reason).toBe("aborted");
    expect(delays).toEqual([1_000, 2_000, 4_000, 8_000]);
    expect(events.filter((e) => e === "heartbeat_failed")).toHaveLength(4);
  });

  it("stops when the workspace is removed (410)", async () => {
    const { client, authToken } = await registered("ws_hb_gone");
    const controller = new AbortController();
    const { delays, sleep } = scriptedSleep(controller, 100, (n) => {
      if (n === 2) platform.remove("ws_hb_gone");
    });
    const stop = await runHeartbeatLoop({ client, token: () => authToken, signal: controller.signal, sleep });
    expect(stop).toEqual({ reason: "removed", status: 410 });
    expect(delays).toHaveLength(2);
    expect(platform.workspace("ws_hb_gone").heartbeats).toHaveLength(2);
  });

  it("renews a rejected token once and carries on with the new one", async () => {
    const { client, authToken } = await registered("ws_hb_renew");
    const controller = new AbortController();
    let token = authToken;
    const { sleep } = scriptedSleep(controller, 3, (n) => {
      if (n === 1) platform.revokeAuthToken("ws_hb_renew");
    });
    const stop = await runHeartbeatLoop({
      client,
      token: () => token,
      onUnauthorized: async () => {
        const boot = platform.reissueBootToken("ws_hb_renew");
        token = (await client.register(boot, { url: null, agentCard: {} })).authToken;
        return token;
      },
      signal: controller.signal,
      sleep,
    });
    expect(stop.reason).toBe("aborted");
    expect(token).not.toBe(authToken);
    expect(platform.workspace("ws_hb_renew").heartbeats).toHaveLength(3);
  });

  it("stops with unauthorized when the token cannot be renewed", async () => {
    const { client, authToken, boot } = await registered("ws_hb_401");
    const creds = new CredentialManager({
      client,
      store: null,
      authToken,
      bootToken: boot, // already spent by registered()
      registration: () => ({ url: null, agentCard: {} }),
    });
    await creds.acquire();
    platform.revokeAuthToken("ws_hb_401");
    const controller = new AbortController();
    const { delays, sleep } = scriptedSleep(controller, 100);
    const stop = await runHeartbeatLoop({
      client,
      token: () => creds.token ?? "",
      onUnauthorized: (signal) => creds.renew(signal),
      signal: controller.signal,
      sleep,
    });
    expect(stop.reason).toBe("unauthorized");
    expect(stop.reason === "unauthorized" && stop.error).toBeInstanceOf(CredentialsError);
    expect(delays).toEqual([]);
  });

  it("reports health and stops promptly on abort with real timers", async () => {
    const { client, authToken } = await registered("ws_hb_abort");
    const controller = new AbortController();
    const started = Date.now();
    const loop = runHeartbeatLoop({
      client,
      token: () => authToken,
      health: () => ({ status: "degraded", detail: "busy" }),
      signal: controller.signal,
      intervalMs: 30_000,
      onBeat: () => setTimeout(() => controller.abort(), 20),
    });
    expect(await loop).toEqual({ reason: "aborted" });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(platform.workspace("ws_hb_abort").heartbeats).toMatchObject([
      { status: "degraded", detail: "busy" },
    ]);
    expect(platform.workspace("ws_hb_abort").status).toBe("degraded");
  });
});

import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { messageText } from "./a2a-protocol.ts";
import { type AgentReadyInfo, type RunAgentOptions, runAgent } from "./agent.ts";
import { sleep as realSleep } from "./backoff.ts";
import { CredentialsError } from "./credentials.ts";
import { sendText } from "./testing/agent-process.ts";
import { FakePlatform } from "./testing/fake-platform.ts";

const platform = new FakePlatform();
beforeAll(() => platform.start());
afterAll(() => platform.stop());

let stateDir = "";
beforeEach(async () => {
  stateDir = await mkdtemp(join(tmpdir(), "agent-sdk-agent-"));
});
afterEach(() => rm(stateDir, { recursive: true, force: true }));

function start(overrides: Partial<RunAgentOptions> & { workspaceId: string }) {
  const controller = new AbortController();
  const lines: string[] = [];
  let resolveReady: (info: AgentReadyInfo) => void = () => {};
  const ready = new Promise<AgentReadyInfo>((resolve) => {
    resolveReady = resolve;
  });
  const done = runAgent({
    platformUrl: platform.url,
    stateDir,
    port: 0,
    host: "127.0.0.1",
    card: { name: "echo-test" },
    onMessage: async (message, ctx) => ({
      parts: [
        { kind: "text", text: `echo: ${messageText(message)} (${Object.keys(ctx.secrets).join(",")})` },
      ],
    }),
    heartbeatIntervalMs: 50,
    retry: { baseMs: 20, maxMs: 100 },
    heartbeatBackoff: { baseMs: 20, maxMs: 100 },
    signal: controller.signal,
    log: (level, event, fields) => lines.push(JSON.stringify({ level, event, ...fields })),
    onReady: (info) => resolveReady(info),
    ...overrides,
  });
  return { controller, done, ready, lines };
}

async function until(check: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** As the platform's proxy sends: with the workspace's inbound token. */
async function send(url: string, text: string, inboundToken: string | null) {
  const res = await sendText(url, text, "message/send", inboundToken);
  return (await res.json()) as { result: { parts: { text: string }[] } };
}

/** The port from the agent's `a2a_listening` line. */
function listeningPort(lines: string[]): number | undefined {
  const line = lines
    .map((l) => JSON.parse(l) as { event: string; port?: number })
    .find((l) => l.event === "a2a_listening");
  return line?.port;
}

describe("runAgent", () => {
  it("registers its real URL, gets its secrets with the registration, serves messages, heartbeats, and stops on abort", async () => {
    const boot = platform.addWorkspace("ws_run", { API_KEY: "sk-secret-value" });
    const agent = start({ workspaceId: "ws_run", bootToken: boot });
    const info = await agent.ready;
    expect(info.credentialSource).toBe("registered");
    expect(info.port).toBeGreaterThan(0);
    expect(info.url).toBe(`http://127.0.0.1:${info.port}`);
    expect(info.secrets).toEqual({ API_KEY: "sk-secret-value" });
    // They came in the register answer: the secrets route was never asked.
    expect(platform.secretPulls).not.toContain("ws_run");
    const ws = platform.workspace("ws_run");
    expect(ws.url).toBe(info.url);
    expect(ws.agentCard).toMatchObject({
      name: "echo-test",
      url: info.url,
      preferredTransport: "JSONRPC",
      additionalInterfaces: [{ url: info.url, transport: "JSONRPC" }],
      supportedInterfaces: [
        { url: info.url, protocolBinding: "JSONRPC", protocolVersion: "1.0" },
        { url: info.url, protocolBinding: "JSONRPC", protocolVersion: "0.3" },
      ],
    });

    expect(info.a2aAuth).toBe("inbound_token");
    const reply = await send(`http://127.0.0.1:${info.port}/`, "hello", ws.inboundToken);
    expect(reply.result.parts[0]?.text).toBe("echo: hello (API_KEY)");
    // Without the inbound token: 401 before the body is read, and the handler never runs.
    const refused = await sendText(`http://127.0.0.1:${info.port}/a2a`, "hello");
    expect(refused.status).toBe(401);
    expect(await refused.json()).toMatchObject({ error: { message: /x-molecule-inbound-token/ } });
    // The card and the health check stay public.
    const card = await (await fetch(`http://127.0.0.1:${info.port}/.well-known/agent-card.json`)).json();
    expect(card).toMatchObject({ name: "echo-test", url: info.url, capabilities: { streaming: true } });

    await until(() => ws.heartbeats.length >= 3);
    expect(ws.status).toBe("online");
    agent.controller.abort();
    expect(await agent.done).toEqual({ reason: "signal" });
    await expect(fetch(`http://127.0.0.1:${info.port}/health`)).rejects.toThrow();

    const log = agent.lines.join("\n");
    expect(log).not.toContain(ws.authToken ?? "missing");
    expect(log).not.toContain(ws.inboundToken ?? "missing");
    expect(log).not.toContain(boot);
    expect(log).not.toContain("sk-secret-value");
  });

  it("reports active in its heartbeats while a message is being answered and in the beat after, not otherwise", async () => {
    const boot = platform.addWorkspace("ws_busy");
    let finish: () => void = () => {};
    const working = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const agent = start({
      workspaceId: "ws_busy",
      bootToken: boot,
      onMessage: async (message) => {
        await working;
        return { parts: [{ kind: "text", text: `done: ${messageText(message)}` }] };
      },
    });
    const info = await agent.ready;
    const ws = platform.workspace("ws_busy");
    await until(() => ws.heartbeats.length >= 2);
    expect(ws.heartbeats.every((beat) => beat.active === undefined)).toBe(true);

    const reply = send(`http://127.0.0.1:${info.port}/`, "long job", ws.inboundToken);
    await until(() => ws.heartbeats.some((beat) => beat.active === true));
    const first = ws.heartbeats.findIndex((beat) => beat.active === true);
    await until(() => ws.heartbeats.length >= first + 3);
    // Every beat while the handler runs says so.
    expect(ws.heartbeats.slice(first).every((beat) => beat.active === true)).toBe(true);
    finish();
    expect((await reply).result.parts[0]?.text).toBe("done: long job");
    const after = ws.heartbeats.length;
    await until(() => ws.heartbeats.length >= after + 4);
    // A beat on its way as the answer went, and the one after, may still say so; the later ones do not.
    expect(ws.heartbeats.slice(after + 2).every((beat) => beat.active === undefined)).toBe(true);
    agent.controller.abort();
    await agent.done;
  });

  it("is online once registered: its first heartbeat is due an interval later, not at once", async () => {
    const boot = platform.addWorkspace("ws_first_beat", { API_KEY: "sk-first" });
    const delays: number[] = [];
    const agent = start({
      workspaceId: "ws_first_beat",
      bootToken: boot,
      heartbeatIntervalMs: 60_000,
      sleep: (ms, signal) => {
        delays.push(ms);
        return realSleep(Math.min(ms, 20), signal);
      },
    });
    const info = await agent.ready;
    expect(info.secrets).toEqual({ API_KEY: "sk-first" });
    const ws = platform.workspace("ws_first_beat");
    expect(ws.status).toBe("online");
    expect(ws.heartbeats).toHaveLength(0);
    // The loop's first wait is the interval, and nothing else waited before it.
    expect(delays).toEqual([60_000]);
    await until(() => ws.heartbeats.length >= 1);
    agent.controller.abort();
    await agent.done;
  });

  it("pulls its secrets when the register answer came without them, retrying the platform's error until it can", async () => {
    const boot = platform.addWorkspace("ws_unreadable", { API_KEY: "sk-later" });
    const ws = platform.workspace("ws_unreadable");
    ws.secretsUnreadable = true;
    const agent = start({ workspaceId: "ws_unreadable", bootToken: boot });
    await until(() => agent.lines.filter((l) => l.includes('"event":"secrets_retry"')).length >= 2);
    // Registered (the boot token is spent), not online, and no heartbeat before the secrets are in hand.
    expect(ws.registrations).toBe(1);
    expect(ws.bootToken).toBeNull();
    expect(ws.status).toBe("awaiting_agent");
    expect(ws.heartbeats).toHaveLength(0);
    expect(agent.lines.find((l) => l.includes('"event":"secrets_retry"'))).toContain(
      "secrets_key_unavailable",
    );

    ws.secretsUnreadable = false;
    const info = await agent.ready;
    expect(info.secrets).toEqual({ API_KEY: "sk-later" });
    expect(platform.secretPulls).toContain("ws_unreadable");
    // Not counted as a heartbeat by the platform: the loop beats at once.
    await until(() => ws.heartbeats.length >= 1);
    expect(ws.status).toBe("online");
    expect(ws.registrations).toBe(1);
    agent.controller.abort();
    await agent.done;
    expect(agent.lines.join("\n")).not.toContain("sk-later");
  });

  it("pulls its secrets and heartbeats at once against a platform whose register answers carry neither", async () => {
    const old = new FakePlatform();
    old.registrationIsFirstBeat = false;
    await old.start();
    try {
      const boot = old.addWorkspace("ws_old_platform", { API_KEY: "sk-old" });
      const agent = start({
        workspaceId: "ws_old_platform",
        bootToken: boot,
        platformUrl: old.url,
        heartbeatIntervalMs: 60_000,
      });
      const info = await agent.ready;
      expect(info.secrets).toEqual({ API_KEY: "sk-old" });
      expect(old.secretPulls).toEqual(["ws_old_platform"]);
      await until(() => old.workspace("ws_old_platform").heartbeats.length >= 1);
      expect(old.workspace("ws_old_platform").status).toBe("online");
      agent.controller.abort();
      await agent.done;
    } finally {
      await old.stop();
    }
  });

  it("re-uses the stored token after a restart with the spent boot token", async () => {
    const boot = platform.addWorkspace("ws_restart_run");
    const first = start({ workspaceId: "ws_restart_run", bootToken: boot });
    await first.ready;
    first.controller.abort();
    await first.done;

    const firstPort = (await first.ready).port;
    const second = start({ workspaceId: "ws_restart_run", bootToken: boot });
    const secondInfo = await second.ready;
    expect(secondInfo.credentialSource).toBe("stored");
    // Back on the same port, so the URL registered the first time still reaches it.
    expect(secondInfo.port).toBe(firstPort);
    expect(platform.workspace("ws_restart_run").url).toBe(secondInfo.url);
    const beats = platform.workspace("ws_restart_run").heartbeats.length;
    await until(() => platform.workspace("ws_restart_run").heartbeats.length > beats);
    second.controller.abort();
    await second.done;
    expect(platform.workspace("ws_restart_run").registrations).toBe(1);

    // When that port is taken, it still starts, on another one.
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(firstPort, "127.0.0.1", resolve));
    try {
      const third = start({ workspaceId: "ws_restart_run" });
      expect((await third.ready).port).not.toBe(firstPort);
      expect(third.lines.some((l) => l.includes("previous_port_taken"))).toBe(true);
      expect(third.lines.some((l) => l.includes("registered_url_stale"))).toBe(true);
      third.controller.abort();
      await third.done;
    } finally {
      blocker.close();
    }
  });

  it("waits for a platform that starts after the agent", async () => {
    const late = new FakePlatform();
    const port = await freePort();
    const boot = late.addWorkspace("ws_late");
    const agent = start({ workspaceId: "ws_late", bootToken: boot, platformUrl: `http://127.0.0.1:${port}` });
    await until(() => agent.lines.filter((l) => l.includes("register_retry")).length >= 2);
    // Listening, but with no credentials yet: nobody's JSON-RPC is served; the card is.
    const agentUrl = `http://127.0.0.1:${listeningPort(agent.lines)}`;
    const early = await sendText(agentUrl, "too soon");
    expect(early.status).toBe(503);
    expect(early.headers.get("retry-after")).toBe("5");
    expect((await fetch(`${agentUrl}/.well-known/agent-card.json`)).status).toBe(200);
    await late.start(port);
    try {
      await agent.ready;
      expect(late.workspace("ws_late").registrations).toBe(1);
      agent.controller.abort();
      expect(await agent.done).toEqual({ reason: "signal" });
    } finally {
      await late.stop();
    }
  });

  it("answers to the inbound token of its latest registration only", async () => {
    const boot = platform.addWorkspace("ws_rotate_run");
    const first = start({ workspaceId: "ws_rotate_run", bootToken: boot });
    await first.ready;
    const oldInbound = platform.workspace("ws_rotate_run").inboundToken;
    first.controller.abort();
    await first.done;

    // The platform rotates the workspace's tokens (a new boot token; the stored bearer token is refused).
    platform.revokeAuthToken("ws_rotate_run");
    const fresh = platform.reissueBootToken("ws_rotate_run");
    const second = start({ workspaceId: "ws_rotate_run", bootToken: fresh });
    const info = await second.ready;
    expect(info.credentialSource).toBe("registered");
    const newInbound = platform.workspace("ws_rotate_run").inboundToken;
    expect(newInbound).not.toBe(oldInbound);
    const url = `http://127.0.0.1:${info.port}/`;
    expect((await sendText(url, "old", "message/send", oldInbound)).status).toBe(401);
    expect((await send(url, "new", newInbound)).result.parts[0]?.text).toMatch(/^echo: new/);
    second.controller.abort();
    await second.done;
  });

  it("serves anyone, and says so, when the platform issues no inbound token", async () => {
    const old = new FakePlatform();
    old.issuesInboundTokens = false;
    await old.start();
    try {
      const boot = old.addWorkspace("ws_open_run");
      const agent = start({ workspaceId: "ws_open_run", bootToken: boot, platformUrl: old.url });
      const info = await agent.ready;
      expect(info.a2aAuth).toBe("open");
      expect(agent.lines.some((l) => l.includes('"event":"a2a_open"'))).toBe(true);
      expect((await send(`http://127.0.0.1:${info.port}/`, "hi", null)).result.parts[0]?.text).toMatch(
        /^echo: hi/,
      );
      agent.controller.abort();
      await agent.done;
    } finally {
      await old.stop();
    }
  });

  it("stops with removed when the workspace is deleted", async () => {
    const boot = platform.addWorkspace("ws_removed_run");
    const agent = start({ workspaceId: "ws_removed_run", bootToken: boot });
    const info = await agent.ready;
    platform.remove("ws_removed_run");
    expect(await agent.done).toEqual({ reason: "removed" });
    await expect(fetch(`http://127.0.0.1:${info.port}/health`)).rejects.toThrow();
  });

  it("fails with a CredentialsError when the token is revoked and the boot token is spent", async () => {
    const boot = platform.addWorkspace("ws_revoked_run");
    const agent = start({ workspaceId: "ws_revoked_run", bootToken: boot });
    await agent.ready;
    platform.revokeAuthToken("ws_revoked_run");
    const err = await agent.done.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CredentialsError);
    expect(agent.lines.some((l) => l.includes("agent_failed"))).toBe(true);
  });

  it("ends cleanly when aborted while still waiting for the platform", async () => {
    const agent = start({ workspaceId: "ws_never", bootToken: "boot", platformUrl: "http://127.0.0.1:9" });
    await until(() => agent.lines.some((l) => l.includes("register_retry")));
    agent.controller.abort();
    expect(await agent.done).toEqual({ reason: "signal" });
  });

  it("rejects when the port is taken", async () => {
    const taken = await freePort(true);
    try {
      const agent = start({ workspaceId: "ws_port", bootToken: "b", port: taken.port });
      await expect(agent.done).rejects.toMatchObject({ code: "EADDRINUSE" });
    } finally {
      taken.close();
    }
  });
});

function freePort(): Promise<number>;
function freePort(keep: true): Promise<{ port: number; close: () => void }>;
async function freePort(keep?: boolean): Promise<number | { port: number; close: () => void }> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const address = srv.address();
  const port = typeof address === "object" && address ? address.port : 0;
  if (keep) return { port, close: () => srv.close() };
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

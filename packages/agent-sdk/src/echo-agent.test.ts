import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakePlatform } from "./testing/fake-platform.ts";

const entry = fileURLToPath(new URL("./echo-agent.ts", import.meta.url));
const platform = new FakePlatform();
let stateDir = "";
beforeAll(async () => {
  await platform.start();
  stateDir = await mkdtemp(join(tmpdir(), "agent-sdk-echo-"));
});
afterAll(async () => {
  await platform.stop();
  await rm(stateDir, { recursive: true, force: true });
});

function spawnEcho(env: Record<string, string>) {
  const child = spawn(process.execPath, ["--import", "tsx", entry], {
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const out: string[] = [];
  let err = "";
  let buffer = "";
  child.stdout.on("data", (chunk: Buffer) => {
    buffer += chunk.toString();
    const lines = buffer.split("\n");
    buffer = lines.pop() ?? "";
    out.push(...lines);
  });
  child.stderr.on("data", (chunk: Buffer) => {
    err += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, out, stderr: () => err, exited };
}

async function waitForEvent(
  out: string[],
  event: string,
  child: ChildProcess,
): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const line = out.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.event === event);
    if (line) return line;
    if (Date.now() > deadline || child.exitCode !== null)
      throw new Error(`no ${event} in:\n${out.join("\n")}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("echo-agent process", () => {
  it("registers, echoes, and exits 0 on SIGTERM without logging tokens or secret values", async () => {
    const boot = platform.addWorkspace("ws_echo_proc", { MY_SECRET: "do-not-print-me" });
    const agent = spawnEcho({
      WORKSPACE_ID: "ws_echo_proc",
      PLATFORM_URL: platform.url,
      WORKSPACE_BOOT_TOKEN: boot,
      AGENT_PORT: "0",
      AGENT_HOST: "127.0.0.1",
      HEARTBEAT_INTERVAL_MS: "200",
      WORKSPACE_STATE_DIR: stateDir,
    });
    try {
      const ready = await waitForEvent(agent.out, "agent_ready", agent.child);
      const url = String(ready.url);
      expect(platform.workspace("ws_echo_proc").url).toBe(url);
      const res = await fetch(url, {
        method: "POST",
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: "1",
          method: "message/send",
          params: { message: { role: "user", parts: [{ kind: "text", text: "ping" }], messageId: "m" } },
        }),
      });
      expect(await res.json()).toMatchObject({
        result: { role: "agent", parts: [{ kind: "text", text: "echo: ping" }] },
      });
    } finally {
      agent.child.kill("SIGTERM");
    }
    expect(await agent.exited).toBe(0);
    expect(agent.out.map((l) => (JSON.parse(l) as { event: string }).event)).toContain("agent_stopped");
    const everything = agent.out.join("\n") + agent.stderr();
    expect(everything).not.toContain(boot);
    expect(everything).not.toContain(platform.workspace("ws_echo_proc").authToken ?? "missing");
    expect(everything).not.toContain("do-not-print-me");
  });

  it("exits 2 with one line naming the missing variable", async () => {
    const agent = spawnEcho({ PLATFORM_URL: "http://127.0.0.1:1" });
    expect(await agent.exited).toBe(2);
    expect(agent.stderr()).toBe("workspace-echo: WORKSPACE_ID is required\n");
  });
});

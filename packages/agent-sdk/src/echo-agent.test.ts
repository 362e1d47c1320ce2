import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { INBOUND_TOKEN_HEADER } from "@molecule/contracts/inbound";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readEventStream } from "./event-stream.ts";
import { sendText, spawnEntry, waitForEvent } from "./testing/agent-process.ts";
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

const spawnEcho = (env: Record<string, string>) =>
  spawnEntry(entry, [], { PATH: process.env.PATH ?? "", ...env });

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
      const ready = await waitForEvent(agent, "agent_ready");
      const url = String(ready.url);
      expect(platform.workspace("ws_echo_proc").url).toBe(url);
      expect(ready.a2aAuth).toBe("inbound_token");
      const inbound = platform.workspace("ws_echo_proc").inboundToken;
      // Only what comes through the platform's proxy (the inbound token from the register answer) is answered.
      expect((await sendText(url, "ping")).status).toBe(401);
      expect((await sendText(url, "ping", "message/send", "in_guessed")).status).toBe(401);
      const res = await sendText(url, "ping", "message/send", inbound);
      // The echo runs as a task: the answer is the completed task, which can be fetched again afterwards.
      const sent = (await res.json()) as { result: { id: string } };
      const completed = {
        kind: "task",
        status: { state: "completed" },
        history: [{ role: "user", parts: [{ kind: "text", text: "ping" }] }],
        artifacts: [{ parts: [{ kind: "text", text: "echo: ping" }] }],
      };
      expect(sent).toMatchObject({ result: completed });
      const fetched = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", [INBOUND_TOKEN_HEADER]: inbound ?? "" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tasks/get", params: { id: sent.result.id } }),
      });
      expect(await fetched.json()).toMatchObject({ id: 2, result: { ...completed, id: sent.result.id } });

      // Streamed, the reply comes in pieces: the prefix, then the words.
      const streamed = await sendText(url, "ping pong", "message/stream", inbound);
      expect(streamed.headers.get("content-type")).toBe("text/event-stream");
      if (!streamed.body) throw new Error("no body");
      const events: { kind: string; artifact?: { parts: { text: string }[] } }[] = [];
      for await (const event of readEventStream(streamed.body))
        events.push((event as { result: never }).result);
      expect(events.map((e) => e.kind)).toEqual([
        "task",
        "status-update",
        "artifact-update",
        "artifact-update",
        "artifact-update",
        "status-update",
      ]);
      expect(events.flatMap((e) => e.artifact?.parts.map((p) => p.text) ?? [])).toEqual([
        "echo: ",
        "ping ",
        "pong",
      ]);
      expect(events.at(-1)).toMatchObject({ status: { state: "completed" }, final: true });
    } finally {
      agent.child.kill("SIGTERM");
    }
    expect(await agent.exited).toBe(0);
    expect(agent.out.map((l) => (JSON.parse(l) as { event: string }).event)).toContain("agent_stopped");
    const everything = agent.out.join("\n") + agent.stderr();
    expect(everything).not.toContain(boot);
    expect(everything).not.toContain(platform.workspace("ws_echo_proc").authToken ?? "missing");
    expect(everything).not.toContain(platform.workspace("ws_echo_proc").inboundToken ?? "missing");
    expect(everything).not.toContain("do-not-print-me");
  });

  it("exits 2 with one line naming the missing variable", async () => {
    const agent = spawnEcho({ PLATFORM_URL: "http://127.0.0.1:1" });
    expect(await agent.exited).toBe(2);
    expect(agent.stderr()).toBe("workspace-echo: WORKSPACE_ID is required\n");
  });
});

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readEventStream, runFlags, type StreamEvent } from "@molecule/agent-sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import {
  freePort,
  killAllPlatformProcesses,
  type PlatformProcess,
  REPO_ROOT,
  startPlatformProcess,
} from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const CLI = join(REPO_ROOT, "packages/agent-sdk/src/cli.ts");

let database: TestDatabase;
let platform: PlatformProcess;
const agents = new Set<ChildProcess>();
const dirs: string[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  platform = await startPlatformProcess({
    env: {
      DATABASE_URL: database.url,
      // Agents here listen on plain http://127.0.0.1.
      ALLOW_INSECURE_AGENT_URLS: "true",
      ALLOW_PRIVATE_AGENT_URLS: "true",
      HEARTBEAT_STALE_AFTER: "2",
      STATUS_SWEEP_INTERVAL: "0.5",
    },
  });
});

afterAll(async () => {
  for (const agent of agents) agent.kill("SIGKILL");
  await killAllPlatformProcesses();
  await database?.drop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "molecule-remote-"));
  dirs.push(dir);
  return dir;
}

interface Agent {
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `npx tsx packages/agent-sdk/src/cli.ts run …` as a separate process, the way a person runs it. */
function startCli(args: string[], env: Record<string, string> = {}): Agent {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, "run", ...args], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: tempDir(), ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  agents.add(child);
  let output = "";
  child.stdout?.on("data", (chunk) => {
    output += chunk;
  });
  child.stderr?.on("data", (chunk) => {
    output += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      agents.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, output: () => output, exited };
}

async function createExternal(name: string, url?: string) {
  const created = await platform.call("POST", "/workspaces", {
    name,
    external: true,
    ...(url ? { url } : {}),
  });
  expect(created.status).toBe(202);
  expect(created.body.workspace).toMatchObject({ status: "awaiting_agent", runtime: "external" });
  return created.body as {
    workspace: { id: string };
    connection: { platform_url: string; registration_token: string; snippets: { curl: string; cli: string } };
  };
}

async function waitForStatus(id: string, status: string, agent?: Agent) {
  try {
    await waitFor(
      `workspace ${id} ${status}`,
      async () => {
        const workspace = (await platform.call("GET", `/workspaces/${id}`)).body;
        return workspace.status === status ? workspace : undefined;
      },
      30_000,
      100,
    );
  } catch (error) {
    throw new Error(`${(error as Error).message}\nagent output:\n${agent?.output() ?? ""}`);
  }
}

describe("a remote agent run with molecule-agent", () => {
  let first: { id: string; port: number; stateDir: string; agent: Agent };

  it("registers with the bundle's token and goes online, offline when killed, online again on restart", async () => {
    const created = await createExternal("laptop");
    const id = created.workspace.id;
    expect(created.connection.platform_url).toBe(platform.url);
    const port = await freePort();
    const stateDir = tempDir();
    const args = runFlags({
      platformUrl: created.connection.platform_url,
      workspaceId: id,
      url: `http://127.0.0.1:${port}`,
      stateDir,
      heartbeatIntervalMs: 300,
    });
    const agent = startCli(args, { WORKSPACE_BOOT_TOKEN: created.connection.registration_token });
    await waitForStatus(id, "online", agent);
    expect((await platform.call("GET", `/workspaces/${id}`)).body.url).toBe(`http://127.0.0.1:${port}`);
    // Online comes with the registration, before the agent has written its token down: killed in between, it could
    // not start again without a new boot token. It says agent_ready once the token is on disk.
    await waitFor(
      "the agent's agent_ready",
      async () => agent.output().includes('"event":"agent_ready"') || undefined,
      30_000,
      50,
    );

    agent.child.kill("SIGKILL");
    await agent.exited;
    await waitForStatus(id, "offline");
    expect((await platform.call("GET", `/workspaces/${id}`)).body.statusReason).toContain("no heartbeat");

    // Same state directory, no token: the stored bearer token carries on.
    const again = startCli(args);
    await waitForStatus(id, "online", again);
    expect(again.output()).toContain('"authSource":"stored"');
    first = { id, port, stateDir, agent: again };
  });

  it("carries an A2A message from one external workspace to another through the platform", async () => {
    expect(first).toBeDefined();
    const created = await createExternal("ci-runner");
    const id = created.workspace.id;
    const port = await freePort();
    // This one is started from the saved connection bundle.
    const bundle = join(tempDir(), "bundle.json");
    writeFileSync(bundle, JSON.stringify(created));
    const agent = startCli([
      "--bundle",
      bundle,
      ...runFlags({ url: `http://127.0.0.1:${port}`, stateDir: tempDir(), heartbeatIntervalMs: 300 }),
    ]);
    await waitForStatus(id, "online", agent);

    // The first workspace calls with its own bearer token, as its agent keeps it.
    const stored = JSON.parse(readFileSync(join(first.stateDir, `credentials-${first.id}.json`), "utf8"));
    const response = await fetch(`${platform.url}/workspaces/${id}/a2a`, {
      method: "POST",
      headers: { authorization: `Bearer ${stored.authToken}`, "content-type": "application/json" },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 7,
        method: "message/send",
        params: {
          message: { role: "user", messageId: "m-7", parts: [{ kind: "text", text: "hello there" }] },
        },
      }),
    });
    expect(response.status).toBe(200);
    // The echo agent runs each message as a task: the answer is the completed task with the reply as its artifact.
    const answer = (await response.json()) as { result: { artifacts: { parts: { text: string }[] }[] } };
    expect(answer).toMatchObject({
      jsonrpc: "2.0",
      id: 7,
      result: { kind: "task", status: { state: "completed" } },
    });
    expect(answer.result.artifacts[0]?.parts[0]?.text).toBe("echo: hello there");
    // The same agent called directly, around the platform, refuses: it answers only its platform's proxy.
    const direct = await fetch(`http://127.0.0.1:${port}/`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 9,
        method: "message/send",
        params: { message: { role: "user", messageId: "m-9", parts: [{ kind: "text", text: "around" }] } },
      }),
    });
    expect(direct.status).toBe(401);

    // Streamed through the platform: the events come in order, the reply in pieces, and the last one completes.
    const streamed = await fetch(`${platform.url}/workspaces/${id}/a2a`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${stored.authToken}`,
        "content-type": "application/json",
        accept: "text/event-stream",
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 8,
        method: "message/stream",
        params: {
          message: { role: "user", messageId: "m-8", parts: [{ kind: "text", text: "stream this reply" }] },
        },
      }),
    });
    expect(streamed.status).toBe(200);
    expect(streamed.headers.get("content-type")).toMatch(/^text\/event-stream/);
    if (!streamed.body) throw new Error("no body");
    const events: { jsonrpc: string; id: number; result: StreamEvent }[] = [];
    for await (const event of readEventStream(streamed.body)) events.push(event as (typeof events)[number]);
    expect(events.every((e) => e.jsonrpc === "2.0" && e.id === 8)).toBe(true);
    const results = events.map((e) => e.result);
    expect(results.map((r) => r.kind)).toEqual([
      "task",
      "status-update",
      "artifact-update",
      "artifact-update",
      "artifact-update",
      "artifact-update",
      "status-update",
    ]);
    expect(results[0]).toMatchObject({ kind: "task", status: { state: "submitted" } });
    expect(results[1]).toMatchObject({ status: { state: "working" }, final: false });
    const pieces = results.flatMap((r) =>
      r.kind === "artifact-update" ? r.artifact.parts.map((p) => (p as { text: string }).text) : [],
    );
    expect(pieces).toEqual(["echo: ", "stream ", "this ", "reply"]);
    expect(results.at(-1)).toMatchObject({ status: { state: "completed" }, final: true });

    agent.child.kill("SIGTERM");
    expect((await agent.exited).code).toBe(0);
  });

  it("stops serving once its workspace is deleted, and a heartbeat never brings it back", async () => {
    const deleted = await platform.call("DELETE", `/workspaces/${first.id}`);
    expect(deleted.status).toBe(202);
    const exit = await first.agent.exited;
    expect(exit.signal).toBeNull();
    await waitForStatus(first.id, "removed");
    const operation = await platform.call("GET", `/operations/${deleted.body.operation.id}`);
    expect(operation.body).toMatchObject({ status: "succeeded" });
    const beat = await platform.call("POST", "/registry/heartbeat", { workspace_id: first.id });
    expect(beat.status).toBe(404);
    expect((await platform.call("GET", `/workspaces/${first.id}`)).body.status).toBe("removed");
  });
});

describe("the connection bundle's cli snippet", () => {
  it("runs as printed, and the token is on no process's command line", async () => {
    const port = await freePort();
    const created = await createExternal("snippet", `http://127.0.0.1:${port}`);
    const token = created.connection.registration_token;
    // From a file, so that not even the shell running it carries the snippet in its arguments.
    const script = join(tempDir(), "agent.sh");
    writeFileSync(script, created.connection.snippets.cli);
    const child = spawn("bash", [script], {
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: tempDir() },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    let output = "";
    child.stdout.on("data", (chunk) => {
      output += chunk;
    });
    child.stderr.on("data", (chunk) => {
      output += chunk;
    });
    const agent: Agent = {
      child,
      output: () => output,
      exited: new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal }))),
    };
    const group = -(child.pid ?? 0);
    try {
      await waitForStatus(created.workspace.id, "online", agent);
      const commandLines: string[] = [];
      for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
        try {
          commandLines.push(readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " "));
        } catch {
          // gone in the meantime
        }
      }
      expect(commandLines.some((line) => line.includes("molecule-agent"))).toBe(true);
      expect(commandLines.filter((line) => line.includes(token))).toEqual([]);
      expect(output).not.toContain("warning");
    } finally {
      process.kill(group, "SIGTERM");
    }
    await agent.exited;
  });
});

describe("the connection bundle's curl snippet", () => {
  it("registers a workspace when run as printed", async () => {
    const created = await createExternal("shell");
    const child = spawn("bash", ["-c", created.connection.snippets.curl], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => {
      output += chunk;
    });
    child.stderr.on("data", (chunk) => {
      output += chunk;
    });
    const code = await new Promise((resolve) => child.once("exit", resolve));
    expect(code, output).toBe(0);
    expect(output).toContain('"status":"online"');
    const workspace = (await platform.call("GET", `/workspaces/${created.workspace.id}`)).body;
    expect(workspace.lastHeartbeatAt).not.toBeNull();
    // Used once: the same token registers nothing again.
    const again = spawn("bash", ["-c", created.connection.snippets.curl], { stdio: "ignore" });
    expect(await new Promise((resolve) => again.once("exit", resolve))).not.toBe(0);
  });
});

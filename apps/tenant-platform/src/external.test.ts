import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RegisterResponse } from "@molecule/contracts";
import { workspaceTokens } from "@molecule/db";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { REPO_ROOT } from "../../../test-support/process.ts";
import { waitFor } from "../../../test-support/wait.ts";

let platform: TestPlatform;
let fake: FakeProvisioner;
let base: string;
const children: ChildProcess[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake);
  base = await platform.listen();
});
afterEach(() => {
  // Every test starts from the platform's default policy.
  platform.deps.settings.allowInsecureAgentUrls = true;
  platform.deps.settings.allowPrivateAgentUrls = true;
});
afterAll(async () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  await platform.close();
});

async function createExternal(body: Record<string, unknown> = {}, headers: Record<string, string> = {}) {
  const created = await platform.call("POST", "/workspaces", {
    body: { name: "remote", external: true, ...body },
    headers,
  });
  expect(created.status).toBe(202);
  return created.body;
}

const register = (token: string | null, body: Record<string, unknown>) =>
  platform.call("POST", "/registry/register", { token, body });

const heartbeat = (token: string | null, id: string) =>
  platform.call("POST", "/registry/heartbeat", { token, body: { workspace_id: id } });

const statusOf = async (id: string) => (await platform.call("GET", `/workspaces/${id}`)).body;

/** Creates an external workspace and registers it with its bundle token; returns the id and the auth token. */
async function connected(body: Record<string, unknown> = {}) {
  const created = await createExternal(body);
  const id: string = created.workspace.id;
  const registered = await register(created.connection.registration_token, { id });
  expect(registered.status).toBe(200);
  return { id, token: registered.body.auth_token as string, created };
}

/** A raw request, so the test controls the Content-Type header exactly. */
async function raw(path: string, token: string, body: string, contentType?: string) {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (contentType) headers["content-type"] = contentType;
  // Bytes, not a string: a string body would be given a text/plain type by the Request itself.
  const response = await platform.app.request(path, {
    method: "POST",
    headers,
    body: new TextEncoder().encode(body),
  });
  // biome-ignore lint/suspicious/noExplicitAny: tests read response bodies field by field
  const parsed: any = await response.json();
  return { status: response.status, body: parsed };
}

describe("creating an external workspace", () => {
  it("records it awaiting its agent, calls no backend and answers a connection bundle", async () => {
    const created = await createExternal({ url: "https://agent.example.com/a2a", metadata: { team: "ml" } });
    const id: string = created.workspace.id;
    expect(created.workspace).toMatchObject({
      runtime: "external",
      backend: "external",
      status: "awaiting_agent",
      url: "https://agent.example.com/a2a",
      metadata: { team: "ml" },
    });
    expect(created.operation).toMatchObject({ kind: "provision", status: "succeeded" });
    const connection = created.connection;
    expect(connection).toMatchObject({
      workspace_id: id,
      platform_url: base,
      registration_token_status: "unused",
      register_url: `${base}/registry/register`,
      heartbeat_url: `${base}/registry/heartbeat`,
      secrets_url: `${base}/workspaces/${id}/secrets/values`,
      agent_url: "https://agent.example.com/a2a",
      heartbeat_interval_seconds: 30,
    });
    expect(connection.registration_token).toMatch(/^mbt_[A-Za-z0-9_-]{43}$/);
    for (const snippet of ["curl", "python", "typescript", "cli"]) {
      expect(connection.snippets[snippet]).toContain(connection.registration_token);
      expect(connection.snippets[snippet]).toContain(id);
    }
    // The CLI gets the token from its environment: a --token flag would show it in the process list.
    expect(connection.snippets.cli).toContain(`WORKSPACE_BOOT_TOKEN='${connection.registration_token}'`);
    expect(connection.snippets.cli).not.toContain("--token");

    // Stored like every boot token: only its hash.
    const tokens = await platform.deps.db
      .select()
      .from(workspaceTokens)
      .where(eq(workspaceTokens.workspaceId, id));
    expect(tokens).toHaveLength(1);
    expect(tokens[0]?.kind).toBe("boot");
    expect(tokens[0]?.tokenHash).not.toContain(connection.registration_token);

    await platform.runner.drain();
    expect(fake.inspect(id)).toBeUndefined();
    expect((await statusOf(id)).status).toBe("awaiting_agent");
    expect(platform.logs.join("")).not.toContain(connection.registration_token);
  });

  it('accepts runtime: "external" as the same request', async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "alias", runtime: "external" },
    });
    expect(created.status).toBe(202);
    expect(created.body.workspace.status).toBe("awaiting_agent");
    expect(created.body.connection.registration_token).toMatch(/^mbt_/);
  });

  it("refuses bodies that mix external and runtime workspaces", async () => {
    const bad = [
      { name: "x", external: true, runtime: "echo" },
      { name: "x", runtime: "echo", url: "https://agent.example.com" },
      { name: "x", runtime: "external", external: false },
      { name: "x" },
      { name: "x", external: true, url: "not a url" },
    ];
    for (const body of bad) {
      const response = await platform.call("POST", "/workspaces", { body });
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(response.body.error.code).toBe("bad_request");
    }
  });

  it("checks the URL against the agent URL policy", async () => {
    platform.deps.settings.allowInsecureAgentUrls = false;
    const insecure = await platform.call("POST", "/workspaces", {
      body: { name: "x", external: true, url: "http://127.0.0.1:8000" },
    });
    expect(insecure.status).toBe(400);
    expect(insecure.body.error.message).toContain("https://");

    platform.deps.settings.allowPrivateAgentUrls = false;
    const privateUrl = await platform.call("POST", "/workspaces", {
      body: { name: "x", external: true, url: "https://10.1.2.3/" },
    });
    expect(privateUrl.status).toBe(400);
    expect(privateUrl.body.error.message).toContain("private");

    const fine = await platform.call("POST", "/workspaces", {
      body: { name: "x", external: true, url: "https://93.184.216.34/" },
    });
    expect(fine.status).toBe(202);

    // The same policy holds when the agent registers its URL.
    const again = await createExternal();
    const registered = await register(again.connection.registration_token, {
      id: again.workspace.id,
      url: "http://192.168.1.20:8000",
    });
    expect(registered.status).toBe(400);
  });

  it("replays the same create with the same token while unused, and without it once used", async () => {
    const headers = { "idempotency-key": "external-replay-1" };
    const first = await createExternal({ name: "replayed" }, headers);
    const second = await createExternal({ name: "replayed" }, headers);
    expect(second.workspace.id).toBe(first.workspace.id);
    expect(second.connection.registration_token).toBe(first.connection.registration_token);

    expect((await register(first.connection.registration_token, { id: first.workspace.id })).status).toBe(
      200,
    );
    const third = await createExternal({ name: "replayed" }, headers);
    expect(third.workspace.id).toBe(first.workspace.id);
    expect(third.connection).toMatchObject({
      registration_token: null,
      registration_token_status: "used",
      snippets: null,
    });
    const tokens = await platform.deps.db
      .select()
      .from(workspaceTokens)
      .where(eq(workspaceTokens.workspaceId, first.workspace.id));
    expect(tokens.filter((token) => token.kind === "boot")).toHaveLength(1);
  });
});

describe("registering an external agent", () => {
  it("needs this workspace's unused token", async () => {
    const created = await createExternal();
    const id: string = created.workspace.id;
    const token: string = created.connection.registration_token;

    expect((await register(null, { id })).status).toBe(401);
    expect((await register(`${token.slice(0, -2)}xx`, { id })).status).toBe(401);

    const other = await createExternal();
    const crossed = await register(other.connection.registration_token, { id });
    expect(crossed.status).toBe(401);
    expect(crossed.body.error.code).toBe("unauthorized");

    const first = await register(token, { id });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ workspace_id: id });
    expect(first.body.auth_token).toMatch(/^mwt_/);
    // An external agent gets its inbound token like a managed one: what the A2A proxy will present to it.
    expect(RegisterResponse.parse(first.body).inbound_token).toMatch(/^mit_[A-Za-z0-9_-]{43}$/);
    const reused = await register(token, { id });
    expect(reused.status).toBe(401);

    // The other workspace's token was not spent by the refused attempt.
    expect((await register(other.connection.registration_token, { id: other.workspace.id })).status).toBe(
      200,
    );
  });

  it("lets the admin register one by hand", async () => {
    const created = await createExternal();
    const registered = await register(ADMIN_TOKEN, { id: created.workspace.id });
    expect(registered.status).toBe(200);
  });

  it("keeps the URL given at creation when the agent registers none", async () => {
    const { id } = await connected({ url: "https://agent.example.com/" });
    expect((await statusOf(id)).url).toBe("https://agent.example.com/");
  });

  it("reads register and heartbeat bodies sent without a Content-Type, or as curl's form type, as JSON", async () => {
    const created = await createExternal();
    const id: string = created.workspace.id;
    const registered = await raw(
      "/registry/register",
      created.connection.registration_token,
      JSON.stringify({ id }),
    );
    expect(registered.status).toBe(200);
    const token: string = registered.body.auth_token;

    const bare = await raw("/registry/heartbeat", token, JSON.stringify({ workspace_id: id }));
    expect(bare).toMatchObject({ status: 200, body: { ok: true, status: "online" } });
    const form = await raw(
      "/registry/heartbeat",
      token,
      JSON.stringify({ workspace_id: id }),
      "application/x-www-form-urlencoded",
    );
    expect(form).toMatchObject({ status: 200, body: { ok: true, status: "online" } });
    const text = await raw("/registry/heartbeat", token, JSON.stringify({ workspace_id: id }), "text/plain");
    expect(text.status).toBe(415);
    const broken = await raw("/registry/heartbeat", token, "workspace_id=x");
    expect(broken.status).toBe(400);
  });

  it("gives the agent its secrets with its own token, and only its own", async () => {
    const { id, token } = await connected({ secrets: { MODEL_API_KEY: "sk-remote-123" } });
    const mine = await platform.call("GET", `/workspaces/${id}/secrets/values`, { token });
    expect(mine.status).toBe(200);
    expect(mine.body.secrets).toEqual({ MODEL_API_KEY: "sk-remote-123" });

    const other = await connected();
    const theirs = await platform.call("GET", `/workspaces/${id}/secrets/values`, { token: other.token });
    expect(theirs.status).toBe(403);
    expect(JSON.stringify(platform.logs)).not.toContain("sk-remote-123");

    // A changed secret reaches the agent on its next pull; nothing asks for a restart the platform cannot do.
    const put = await platform.call("PUT", `/workspaces/${id}/secrets/MODEL_API_KEY`, {
      body: { value: "sk-remote-456" },
    });
    expect(put.status).toBe(200);
    expect(put.body.needsRestart).toBe(false);
    expect((await platform.call("GET", `/workspaces/${id}`)).body.needsRestart).toBe(false);
    const again = await platform.call("GET", `/workspaces/${id}/secrets/values`, { token });
    expect(again.body.secrets).toEqual({ MODEL_API_KEY: "sk-remote-456" });
  });
});

describe("an external workspace's life", () => {
  it("goes online on a heartbeat, offline on silence, online again; the status sweep leaves it to heartbeats", async () => {
    const created = await createExternal();
    const id: string = created.workspace.id;
    // Awaiting its agent: the backend knows nothing of it, and the sweep must not read that as "gone".
    await platform.sweeper.sweep();
    expect((await statusOf(id)).status).toBe("awaiting_agent");

    const token = (await register(created.connection.registration_token, { id })).body.auth_token;
    expect((await heartbeat(token, id)).body.status).toBe("online");
    await platform.sweeper.sweep();
    expect((await statusOf(id)).status).toBe("online");

    platform.clock.advance(platform.deps.settings.staleAfterMs + 1_000);
    await platform.sweeper.sweep();
    const offline = await statusOf(id);
    expect(offline.status).toBe("offline");
    expect(offline.statusReason).toContain("no heartbeat");

    expect((await heartbeat(token, id)).body.status).toBe("online");
    expect((await statusOf(id)).status).toBe("online");
  });

  it("refuses stop, start, restart, redeploy and suspend with 409", async () => {
    const { id } = await connected();
    for (const kind of ["stop", "start", "restart", "redeploy", "suspend"]) {
      const response = await platform.call("POST", `/workspaces/${id}/${kind}`);
      expect(response.status, kind).toBe(409);
      expect(response.body.error.code).toBe("conflict");
      expect(response.body.error.message).toContain(`cannot ${kind} external workspace`);
    }
    expect((await platform.call("GET", `/workspaces/${id}/operations`)).body.operations).toHaveLength(1);
  });

  it("leaves those requests to workspaces the platform runs (suspend included)", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "runs-here", runtime: "echo" },
    });
    const id: string = created.body.workspace.id;
    await waitFor("the provision to finish", async () =>
      (await statusOf(id)).status === "awaiting_agent" ? true : undefined,
    );
    const suspended = await platform.call("POST", `/workspaces/${id}/suspend`);
    expect(suspended.status).toBe(202);
    expect(suspended.body.operation.kind).toBe("suspend");
    await waitFor("the suspend to finish", async () =>
      (await statusOf(id)).status === "suspended" ? true : undefined,
    );
    expect(fake.inspect(id)?.instance?.state).toBe("suspended");
  });

  it("is deleted without a backend call; its tokens are revoked and a heartbeat never brings it back", async () => {
    const { id, token } = await connected({ secrets: { K: "v" } });
    expect((await heartbeat(token, id)).body.status).toBe("online");

    const deleted = await platform.call("DELETE", `/workspaces/${id}`);
    expect(deleted.status).toBe(202);
    expect(deleted.body.workspace.status).toBe("removing");
    // 404 while the delete runs; 401 if the runner has already revoked the token. Either way it stays gone.
    const during = await heartbeat(token, id);
    expect([401, 404]).toContain(during.status);
    expect(["removing", "removed"]).toContain((await statusOf(id)).status);

    // The platform's own runner (started by listen) picks the delete up. The workspace reads `removed` as soon as
    // the operation's last step has moved it, a moment before the runner records the operation's own end.
    await waitFor("the delete to finish", async () =>
      (await statusOf(id)).status === "removed" ? true : undefined,
    );
    const operation = await waitFor("the delete operation to end", async () => {
      const read = await platform.call("GET", `/operations/${deleted.body.operation.id}`);
      return read.body.status === "running" ? undefined : read;
    });
    expect(operation.body.status).toBe("succeeded");
    expect(operation.body.steps.map((step: { name: string }) => step.name)).toEqual([
      "external_agent_disconnected",
      "records_removed",
    ]);
    expect(fake.inspect(id)).toBeUndefined();

    // The auth token is gone; even the admin's heartbeat for it is 404.
    expect((await heartbeat(token, id)).status).toBe(401);
    expect((await heartbeat(ADMIN_TOKEN, id)).status).toBe(404);
    expect((await platform.call("GET", `/workspaces/${id}/secrets/values`, { token })).status).toBe(401);
    expect((await statusOf(id)).status).toBe("removed");
    expect(
      await platform.deps.db.select().from(workspaceTokens).where(eq(workspaceTokens.workspaceId, id)),
    ).toEqual([]);
  });
});

describe("the bundle's snippets, run as printed", () => {
  function run(command: string, args: string[]): ChildProcess {
    const child = spawn(command, args, { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    return child;
  }

  async function runsOnline(id: string, child: ChildProcess) {
    let output = "";
    child.stdout?.on("data", (chunk) => {
      output += chunk;
    });
    child.stderr?.on("data", (chunk) => {
      output += chunk;
    });
    try {
      // The snippet prints its line after the heartbeat's answer arrives, which can be after the row says online.
      await waitFor(
        `workspace ${id} online and the snippet's "heartbeat: online" line`,
        async () =>
          (await statusOf(id)).status === "online" && output.includes("heartbeat: online") ? true : undefined,
        30_000,
      );
    } catch (error) {
      throw new Error(`${(error as Error).message}\n${output}`);
    } finally {
      child.kill("SIGKILL");
    }
    expect(output).toContain("heartbeat: online");
  }

  it("the Python one (standard library only) registers and heartbeats", async () => {
    const created = await createExternal({ url: "https://agent.example.com/" });
    await runsOnline(created.workspace.id, run("python3", ["-c", created.connection.snippets.python]));
  });

  it("the TypeScript one (fetch) registers and heartbeats", async () => {
    const created = await createExternal();
    const dir = mkdtempSync(join(tmpdir(), "molecule-snippet-"));
    dirs.push(dir);
    const file = join(dir, "agent.mts");
    writeFileSync(file, created.connection.snippets.typescript);
    await runsOnline(created.workspace.id, run(process.execPath, ["--import", "tsx", file]));
  });

  it("the curl one registers and sends the first heartbeat", async () => {
    const created = await createExternal();
    const child = run("bash", ["-c", created.connection.snippets.curl]);
    const code = await new Promise((resolve) => child.once("exit", resolve));
    expect(code).toBe(0);
    expect((await statusOf(created.workspace.id)).status).toBe("online");
  });
});

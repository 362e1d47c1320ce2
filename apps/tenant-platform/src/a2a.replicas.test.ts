/**
 * The A2A proxy answers callers' tokens and targets' routes from memory (services/a2a-directory.ts). Two platforms on
 * one PostgreSQL database, each with its own connection pool and its own LISTEN connection, stand for two replicas:
 * every change is made through `writer` (or straight in the database), every call goes through `proxy` (served, so
 * the raw route answers) after it has the caller and the target in memory. A change must reach the proxy by the
 * database's change feed alone: there is no expiry, so a missed invalidation would serve the old answer forever.
 */
import { messageText, type StartedA2AServer, startA2AServer } from "@molecule/agent-sdk";
import { createDatabase, type Database, workspaces } from "@molecule/db";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { CHANGE_CHANNEL } from "@molecule/service-kit/cluster";
import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { waitFor } from "../../../test-support/wait.ts";

let writer: TestPlatform;
let proxy: TestPlatform;
let proxyDatabase: Database;
const agents: StartedA2AServer[] = [];
/** What each agent accepts, by its URL: the inbound token its latest registration answered. */
const inbound = new Map<string, string>();

interface Ws {
  id: string;
  token: string;
}

async function echoAgent(name: string): Promise<string> {
  const agent = await startA2AServer({
    host: "127.0.0.1",
    port: 0,
    card: { name, description: `${name} echoes`, skills: [] },
    inbound: () => {
      const token = inbound.get(url);
      return token ? { token } : "pending";
    },
    onMessage: async (message) => ({ parts: [{ kind: "text", text: `${name}: ${messageText(message)}` }] }),
  });
  agents.push(agent);
  const url = `http://127.0.0.1:${agent.port}/`;
  return url;
}

/** Registers `id` at `url` through the writer (admin) and heartbeats it online with the token it got. */
async function register(id: string, url: string): Promise<Ws> {
  const registered = await writer.call("POST", "/registry/register", { body: { id, url } });
  expect(registered.status).toBe(200);
  inbound.set(url, registered.body.inbound_token);
  const token = registered.body.auth_token as string;
  const beat = await writer.call("POST", "/registry/heartbeat", { token, body: { workspace_id: id } });
  expect(beat.body.status).toBe("online");
  return { id, token };
}

async function addWorkspace(name: string): Promise<Ws> {
  const created = await writer.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  expect(created.status).toBe(202);
  await writer.runner.drain();
  return register(created.body.workspace.id, await echoAgent(name));
}

function send(text: string) {
  return {
    jsonrpc: "2.0",
    id: 1,
    method: "message/send",
    params: { message: { role: "user", messageId: "m-1", parts: [{ kind: "text", text }] } },
  };
}

function call(target: Ws, token: string, text = "hi") {
  return proxy.callServed("POST", `/workspaces/${target.id}/a2a`, { token, body: send(text) });
}

/** Calls until `accept` holds for an answer (the notification is on its way), then returns that answer. */
function callUntil(
  target: Ws,
  token: string,
  what: string,
  accept: (status: number, text?: string) => boolean,
) {
  return waitFor(
    what,
    async () => {
      const answer = await call(target, token);
      return accept(answer.status, answer.body?.result?.parts?.[0]?.text) ? answer : undefined;
    },
    10_000,
    20,
  );
}

beforeAll(async () => {
  const provisioner = createFakeProvisioner();
  writer = await createTestPlatform(provisioner);
  proxyDatabase = await createDatabase({ url: writer.database.url, maxConnections: 5 });
  proxy = await createTestPlatform(
    provisioner,
    {},
    { database: { ...proxyDatabase, url: writer.database.url, drop: async () => undefined } },
  );
  await proxy.listen();
  // Operations run on the writer only: nothing the proxy's own process does may tell it of a change.
  await proxy.runner.stop();
  await proxy.sweeper.stop();
}, 60_000);

afterAll(async () => {
  await Promise.all(agents.map((agent) => agent.close(100)));
  await proxy?.close();
  await proxyDatabase?.close();
  await writer?.close();
});

describe("the A2A proxy's memory across replicas", () => {
  it("answers from memory until a change is announced, then from the database", async () => {
    const caller = await addWorkspace("caller");
    const target = await addWorkspace("target");
    expect((await call(target, caller.token)).status).toBe(200);
    // A change written without its notification (triggers off for this session) is not seen: memory answers.
    await proxyDatabase.db.transaction(async (tx) => {
      await tx.execute(sql`SET LOCAL session_replication_role = replica`);
      await tx.update(workspaces).set({ status: "offline" }).where(eq(workspaces.id, target.id));
    });
    expect((await call(target, caller.token)).status).toBe(200);
    // Its notification alone makes the proxy read the row again.
    await proxyDatabase.notify(CHANGE_CHANNEL, `workspaces:${target.id}`);
    const refused = await callUntil(
      target,
      caller.token,
      "the offline target refused",
      (status) => status === 503,
    );
    expect(refused.body.error.data.code).toBe("upstream_unavailable");
    expect(refused.headers.get("retry-after")).toBe("30");
  });

  it("a caller's token revoked on another replica is refused (401); its new token is accepted", async () => {
    const caller = await addWorkspace("revoked-caller");
    const target = await addWorkspace("revoked-target");
    expect((await call(target, caller.token)).status).toBe(200);
    // Registering again rotates the bearer token: the old one is revoked.
    const fresh = await register(caller.id, await echoAgent("revoked-caller-2"));
    const refused = await callUntil(
      target,
      caller.token,
      "the revoked token refused",
      (status) => status === 401,
    );
    expect(refused.body.error.data.code).toBe("unauthorized");
    expect((await call(target, fresh.token)).status).toBe(200);
  });

  it("a target stopped on another replica answers 503 with Retry-After", async () => {
    const caller = await addWorkspace("stop-caller");
    const target = await addWorkspace("stop-target");
    expect((await call(target, caller.token)).status).toBe(200);
    expect((await writer.call("POST", `/workspaces/${target.id}/stop`)).status).toBe(202);
    await writer.runner.drain();
    const refused = await callUntil(
      target,
      caller.token,
      "the stopped target refused",
      (status) => status === 503,
    );
    expect(refused.body.error.data.details).toMatchObject({ status: "stopped" });
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
  });

  it("a target registered again at a new URL is called there, with its new inbound token", async () => {
    const caller = await addWorkspace("move-caller");
    const target = await addWorkspace("move-target");
    const before = await call(target, caller.token);
    expect(before.body.result.parts[0].text).toBe("move-target: hi");
    await register(target.id, await echoAgent("moved"));
    // The old agent still listens, and now refuses the old inbound token only if asked: the new URL must be used.
    await callUntil(target, caller.token, "the call reaching the new URL", (status, text) => {
      return status === 200 && text === "moved: hi";
    });
  });

  it("a workspace removed on another replica is gone (404), and its token with it (401)", async () => {
    const caller = await addWorkspace("remove-caller");
    const target = await addWorkspace("remove-target");
    expect((await call(target, caller.token)).status).toBe(200);
    expect((await writer.call("DELETE", `/workspaces/${target.id}`)).status).toBe(202);
    await writer.runner.drain();
    await callUntil(target, caller.token, "the removed target not found", (status) => status === 404);
    expect((await call(caller, target.token)).status).toBe(401);
  });
});

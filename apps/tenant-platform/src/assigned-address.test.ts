/**
 * The address a managed backend assigns its agent (the handle's `agentUrl`) under the strict agent URL policy that
 * non-docker backends default to: a managed workspace may register exactly that address, and the A2A proxy reaches
 * it, though it is a private one; every other URL, from a managed or an external workspace, stays under the policy.
 */
import type { LookupAddress } from "node:dns";
import { type InboundAuth, messageText, type StartedA2AServer, startA2AServer } from "@molecule/agent-sdk";
import { workspaces } from "@molecule/db";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { loadConfig } from "./config.ts";
import type { Resolver } from "./services/agent-url-policy.ts";

const PRIVATE_ZONE = ".vm.molecule-ws.internal";

/** Private-network names of the emulated backend resolve to the test agent on loopback; nothing else resolves. */
const resolver: Resolver = async (host) => {
  if (host.endsWith(PRIVATE_ZONE)) return [{ address: "127.0.0.1", family: 4 } satisfies LookupAddress];
  throw Object.assign(new Error(`ENOTFOUND ${host}`), { code: "ENOTFOUND" });
};

let platform: TestPlatform;
let fake: FakeProvisioner;
let agent: StartedA2AServer;
let agentAuth: InboundAuth = "pending";

const send = (text: string) => ({
  jsonrpc: "2.0",
  id: 1,
  method: "message/send",
  params: { message: { role: "user", messageId: "m-1", parts: [{ kind: "text", text }] } },
});

beforeAll(async () => {
  agent = await startA2AServer({
    host: "127.0.0.1",
    port: 0,
    card: { name: "assigned", description: "echoes", skills: [] },
    inbound: () => agentAuth,
    onMessage: async (message) => ({ parts: [{ kind: "text", text: `echo: ${messageText(message)}` }] }),
  });
  fake = createFakeProvisioner({
    agentUrl: (_workspaceId, instanceId) => `http://${instanceId}${PRIVATE_ZONE}:${agent.port}`,
  });
  // The policy a platform on Fly (or on the control plane) runs with: https only, no private addresses.
  const policy = loadConfig({
    CONTAINER_BACKEND: "flyio",
    FLY_API_TOKEN: "t",
    FLY_WORKSPACE_APP: "a",
  }).agentUrls;
  expect(policy).toEqual({ allowInsecure: false, allowPrivate: false });
  platform = await createTestPlatform(
    fake,
    { allowInsecureAgentUrls: policy.allowInsecure, allowPrivateAgentUrls: policy.allowPrivate },
    { resolveAgentHost: resolver },
  );
});
afterAll(async () => {
  await platform?.close();
  await agent?.close();
});

async function managed(name: string): Promise<{ id: string; agentUrl: string }> {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  expect(created.status).toBe(202);
  await platform.runner.drain();
  const id = created.body.workspace.id as string;
  return { id, agentUrl: await storedAgentUrl(id) };
}

async function storedAgentUrl(id: string): Promise<string> {
  const [row] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
  const agentUrl = row?.handle?.agentUrl;
  expect(agentUrl).toEqual(expect.stringMatching(/^http:\/\/fake-inst-\d+\.vm\.molecule-ws\.internal:\d+$/));
  return agentUrl as string;
}

const register = (id: string, url: string) =>
  platform.call("POST", "/registry/register", { body: { id, url } });

describe("the address a managed backend assigned", () => {
  it("is accepted at registration under a policy that refuses private addresses, and A2A reaches it", async () => {
    const { id, agentUrl } = await managed("assigned");
    expect(fake.inspect(id)?.instance?.env.AGENT_PUBLIC_URL).toBe(agentUrl);

    const registered = await register(id, agentUrl);
    expect(registered.status, JSON.stringify(registered.body)).toBe(200);
    agentAuth = { token: registered.body.inbound_token };
    const beat = await platform.call("POST", "/registry/heartbeat", {
      token: registered.body.auth_token,
      body: { workspace_id: id },
    });
    expect(beat.body.status).toBe("online");
    const shown = await platform.call("GET", `/workspaces/${id}`);
    expect(shown.body.url).toBe(agentUrl);

    const reply = await platform.call("POST", `/workspaces/${id}/a2a`, {
      body: send("over the private network"),
    });
    expect(reply.status, JSON.stringify(reply.body)).toBe(200);
    expect(JSON.stringify(reply.body)).toContain("echo: over the private network");

    // Restarted on a new instance: the address changed, and the old one is an ordinary private URL again.
    expect((await platform.call("POST", `/workspaces/${id}/restart`)).status).toBe(202);
    await platform.runner.drain();
    const moved = await storedAgentUrl(id);
    expect(moved).not.toBe(agentUrl);
    const beatAgain = await platform.call("POST", "/registry/heartbeat", {
      token: registered.body.auth_token,
      body: { workspace_id: id },
    });
    expect(beatAgain.body.status).toBe("online");
    const refused = await platform.call("POST", `/workspaces/${id}/a2a`, {
      body: send("to the old address"),
    });
    expect(refused.status).toBe(502);
    expect(refused.body.error.message).toBe("agent URL resolves to a private address");
    expect((await register(id, agentUrl)).status).toBe(400);
    expect((await register(id, moved)).status).toBe(200);
  });

  it("is the only private URL a managed workspace may register: loopback, other private hosts and ports stay refused", async () => {
    const { id, agentUrl } = await managed("only-its-own");
    const other = await managed("neighbour");
    const port = new URL(agentUrl).port;
    for (const url of [
      "http://127.0.0.1:8000",
      `http://127.0.0.1:${port}`,
      `http://10.0.0.5:${port}`,
      `http://localhost:${port}`,
      other.agentUrl,
      agentUrl.replace(`:${port}`, `:${Number(port) + 1}`),
      agentUrl.replace("http:", "https:"),
      `${agentUrl}/elsewhere`,
      agentUrl.replace("http://", "http://user:pass@"),
    ]) {
      const refused = await register(id, url);
      expect(refused.status, url).toBe(400);
      expect(refused.body.error.code).toBe("bad_request");
    }
    // Written the way URLs normalise (a trailing slash), it is the same address.
    expect((await register(id, `${agentUrl}/`)).status).toBe(200);
  });

  it("is answered 503 (retry) while the workspace is still provisioning, not 400; nothing is written", async () => {
    // The runner has not run the provision yet: the backend has assigned nothing.
    const created = await platform.call("POST", "/workspaces", { body: { name: "early", runtime: "echo" } });
    const id = created.body.workspace.id as string;
    const early = await register(id, `http://fake-inst-999${PRIVATE_ZONE}:8000`);
    expect(early.status).toBe(503);
    expect(early.body.error.code).toBe("backend_unavailable");
    const [row] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
    expect(row?.status).toBe("provisioning");
    expect(row?.url).toBeNull();
    await platform.runner.drain();
    expect((await register(id, "http://127.0.0.1:8000")).status).toBe(400);
    expect((await register(id, await storedAgentUrl(id))).status).toBe(200);
  });

  it("does not exist for external workspaces: their URLs stay under the policy", async () => {
    const { agentUrl } = await managed("someone-else");
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "remote", runtime: "external" },
    });
    expect(created.status).toBe(202);
    const id = created.body.workspace.id as string;
    for (const url of [agentUrl, "http://127.0.0.1:8000", "https://10.0.0.5/"]) {
      const refused = await platform.call("POST", "/registry/register", {
        token: created.body.connection.registration_token,
        body: { id, url },
      });
      expect(refused.status, url).toBe(400);
    }
    const accepted = await platform.call("POST", "/registry/register", {
      token: created.body.connection.registration_token,
      body: { id, url: "https://agent.example.com/" },
    });
    expect(accepted.status).toBe(200);
  });
});

/**
 * The protocol's official JavaScript SDK (`@a2a-js/sdk`) as an A2A client of a workspace through the platform's
 * proxy, in A2A 1.0 (its default, discovering the proxy from the card the platform serves) and 0.3 (its compatibility
 * transport), over real HTTP through the raw route, to an agent built with our SDK and to the official SDK's own
 * server.
 */
import {
  CancelTaskRequest,
  GetTaskRequest,
  type Message,
  SendMessageRequest,
  type StreamResponse,
  SubscribeToTaskRequest,
  type Task,
} from "@a2a-js/sdk";
import {
  Client,
  ClientFactory,
  ClientFactoryOptions,
  DefaultAgentCardResolver,
  JsonRpcTransportFactory,
} from "@a2a-js/sdk/client";
import { LegacyJsonRpcTransport } from "@a2a-js/sdk/compat/v0_3/client";
import { asTask, cardFor, messageText, type StartedA2AServer, startA2AServer } from "@molecule/agent-sdk";
import { startReference } from "@molecule/agent-sdk/testing/official-reference";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";

let platform: TestPlatform;
let base = "";
let agent: StartedA2AServer;
let reference: Awaited<ReturnType<typeof startReference>>;
let targetId = "";
let referenceId = "";
let stoppedId = "";
let callerToken = "";
/** The A2A-Version header of each request the agent got. */
const versions: (string | undefined)[] = [];

function gate() {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}
let held = gate();

/** Creates a workspace (fake backend), registers `url` and `card` for it, heartbeats it online. */
async function addWorkspace(name: string, url: string, card: Record<string, unknown>) {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  await platform.runner.drain();
  const id = created.body.workspace.id as string;
  const registered = await platform.call("POST", "/registry/register", {
    body: { id, url, agent_card: card },
  });
  expect(registered.status).toBe(200);
  const token = registered.body.auth_token as string;
  await platform.call("POST", "/registry/heartbeat", { token, body: { workspace_id: id } });
  return { id, token, inboundToken: registered.body.inbound_token as string };
}

beforeAll(async () => {
  platform = await createTestPlatform(createFakeProvisioner(), {
    allowInsecureAgentUrls: true,
    allowPrivateAgentUrls: true,
  });
  let inbound = "pending";
  agent = await startA2AServer({
    host: "127.0.0.1",
    port: 0,
    card: { name: "through", description: "reached through the proxy", version: "1.0.0" },
    inbound: () => ({ token: inbound }),
    onMessage: (message, context) => {
      const text = messageText(message);
      if (text.startsWith("task:"))
        return asTask({ parts: [{ kind: "text", text: `done:${text.slice(5)}` }] });
      if (text === "slow") {
        return asTask(
          (async function* () {
            yield "started";
            await Promise.race([
              held.opened,
              new Promise((resolve) => context.signal.addEventListener("abort", resolve, { once: true })),
            ]);
            if (!context.signal.aborted) yield " finished";
          })(),
        );
      }
      return { parts: [{ kind: "text", text: `echo: ${text}` }] };
    },
  });
  const url = `http://127.0.0.1:${agent.port}/`;
  // As runAgent registers it: the card in 0.3's shape with 1.0's interface list beside.
  const card = cardFor({ name: "through", description: "reached through the proxy" }, url, "0.3");
  const target = await addWorkspace("target", url, card);
  inbound = target.inboundToken;
  targetId = target.id;
  callerToken = (await addWorkspace("caller", "http://127.0.0.1:9/", card)).token;
  stoppedId = (await addWorkspace("stopped", "http://127.0.0.1:9/", card)).id;
  reference = await startReference();
  const referenceCard = cardFor(
    { name: "reference", description: "the official SDK's server" },
    reference.url,
    "0.3",
  );
  referenceId = (await addWorkspace("reference", reference.url, referenceCard)).id;
  expect((await platform.call("POST", `/workspaces/${stoppedId}/stop`)).status).toBe(202);
  await platform.runner.drain();
  base = await platform.listen();
  // Every request the agent gets, as the platform forwarded it.
  agent.server.prependListener("request", (req) => {
    if (req.method === "POST") versions.push(req.headers["a2a-version"] as string | undefined);
  });
}, 60_000);
afterAll(async () => {
  await agent.close(100);
  reference.server.closeAllConnections();
  await new Promise((resolve) => reference.server.close(resolve));
  await platform.close();
});
beforeEach(() => {
  held = gate();
});

/** fetch with the caller's workspace token: how a workspace's A2A client is set up to call through the platform. */
const authed: typeof fetch = (input, init) => {
  const headers = new Headers(init?.headers);
  headers.set("authorization", `Bearer ${callerToken}`);
  return fetch(input, { ...init, headers });
};

const factory = () =>
  new ClientFactory(
    ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
      transports: [new JsonRpcTransportFactory({ fetchImpl: authed })],
      cardResolver: new DefaultAgentCardResolver({ fetchImpl: authed }),
    }),
  );
const cardBase = (id: string) => `${base}/workspaces/${id}/`;
const proxyUrl = (id: string) => `${base}/workspaces/${id}/a2a`;

const clients: [string, (id: string) => Promise<Client>][] = [
  ["1.0", (id) => factory().createFromUrl(cardBase(id))],
  [
    "0.3",
    async (id) => {
      const card = await (await factory().createFromUrl(cardBase(id))).getAgentCard();
      return new Client(new LegacyJsonRpcTransport({ endpoint: proxyUrl(id), fetchImpl: authed }), card);
    },
  ],
];

const send = (text: string, extra: { taskId?: string; returnImmediately?: boolean } = {}) =>
  SendMessageRequest.fromJSON({
    message: {
      messageId: crypto.randomUUID(),
      role: "ROLE_USER",
      parts: [{ text }],
      ...(extra.taskId ? { taskId: extra.taskId } : {}),
    },
    ...(extra.returnImmediately ? { configuration: { returnImmediately: true } } : {}),
  });
const isTask = (result: Message | Task): result is Task => "status" in result && "id" in result;
const textOf = (parts: { content?: { $case: string; value: unknown } }[] = []) =>
  parts.map((p) => (p.content?.$case === "text" ? p.content.value : "")).join("");
const artifactText = (task: Task) => task.artifacts.map((a) => textOf(a.parts)).join("");

async function collect(events: AsyncGenerator<StreamResponse>) {
  const all: NonNullable<StreamResponse["payload"]>[] = [];
  for await (const event of events) if (event.payload) all.push(event.payload);
  return all;
}

/** The error a call failed with, as the SDK reports it: its JSON-RPC code and data. */
async function failure(call: Promise<unknown> | (() => Promise<unknown>)) {
  try {
    await (typeof call === "function" ? call() : call);
  } catch (err) {
    const e = err as {
      envelopeCode?: number;
      data?: unknown;
      cause?: { envelopeCode?: number; data?: unknown };
    };
    return { code: e.envelopeCode ?? e.cause?.envelopeCode, data: e.data ?? e.cause?.data };
  }
  throw new Error("the call succeeded");
}

describe("GET /workspaces/:id/.well-known/agent-card.json", () => {
  it("serves the target's card with every interface pointing at the proxy, to an authorised caller", async () => {
    const response = await platform.callServed("GET", `/workspaces/${targetId}/.well-known/agent-card.json`, {
      token: callerToken,
    });
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({
      name: "through",
      url: proxyUrl(targetId),
      preferredTransport: "JSONRPC",
      additionalInterfaces: [{ url: proxyUrl(targetId), transport: "JSONRPC" }],
      supportedInterfaces: [
        { url: proxyUrl(targetId), protocolBinding: "JSONRPC", protocolVersion: "1.0" },
        { url: proxyUrl(targetId), protocolBinding: "JSONRPC", protocolVersion: "0.3" },
      ],
    });
    expect(JSON.stringify(response.body)).not.toContain(`:${agent.port}`);
    const anonymous = await platform.callServed(
      "GET",
      `/workspaces/${targetId}/.well-known/agent-card.json`,
      {
        token: null,
      },
    );
    expect(anonymous.status).toBe(401);
  });
});

describe.each(clients)("the official SDK as an A2A %s client through the proxy", (version, connect) => {
  let client: Client;
  beforeAll(async () => {
    client = await connect(targetId);
  });

  it("speaks the version it was made for, and the target hears it in A2A-Version", async () => {
    expect(client.protocolVersion).toBe(version);
    versions.length = 0;
    await client.sendMessage(send("hi"));
    expect(versions).toEqual([version]);
  });

  it("sends: a direct answer as a Message, a task as a completed Task", async () => {
    const direct = await client.sendMessage(send("hi"));
    expect(isTask(direct)).toBe(false);
    expect(textOf((direct as Message).parts)).toBe("echo: hi");
    const task = await client.sendMessage(send("task: build"));
    if (!isTask(task)) throw new Error("expected a task");
    expect([task.status?.state, artifactText(task)]).toEqual([3, "done: build"]);
  });

  it("streams, then gets the streamed task", async () => {
    const events = await collect(client.sendMessageStream(send("streamed")));
    expect(events.map((e) => e.$case)).toEqual(["task", "statusUpdate", "artifactUpdate", "statusUpdate"]);
    const taskId = events[0]?.$case === "task" ? events[0].value.id : "";
    const fetched = await client.getTask(GetTaskRequest.fromJSON({ id: taskId }));
    expect([fetched.status?.state, artifactText(fetched)]).toEqual([3, "echo: streamed"]);
  });

  it("cancels a running task", async () => {
    const started = await client.sendMessage(send("slow", { returnImmediately: true }));
    if (!isTask(started)) throw new Error("expected a task");
    const canceled = await client.cancelTask(CancelTaskRequest.fromJSON({ id: started.id }));
    expect(canceled.status?.state).toBe(5); // CANCELED
  });

  it("resubscribes to a running task and follows it to the end", async () => {
    const started = await client.sendMessage(send("slow", { returnImmediately: true }));
    if (!isTask(started)) throw new Error("expected a task");
    const events = client.resubscribeTask(SubscribeToTaskRequest.fromJSON({ id: started.id }));
    expect((await events.next()).value?.payload?.$case).toBe("task");
    held.open();
    const last = (await collect(events)).at(-1);
    expect(last?.$case === "statusUpdate" && last.value.status?.state).toBe(3);
  });

  it("gets the agent's own -32001 for a task it does not know", async () => {
    expect((await failure(client.getTask(GetTaskRequest.fromJSON({ id: "no-such-task" })))).code).toBe(
      -32001,
    );
    expect(
      (
        await failure(() =>
          collect(client.resubscribeTask(SubscribeToTaskRequest.fromJSON({ id: "no-such-task" }))),
        )
      ).code,
    ).toBe(-32001);
  });

  it("reads the proxy's own errors as JSON-RPC errors with the stable code in data", async () => {
    const stopped = await connect(stoppedId);
    const refused = await failure(stopped.sendMessage(send("anyone there?")));
    expect(refused).toMatchObject({ code: -32050, data: { code: "upstream_unavailable" } });
    const streamRefused = await failure(() => collect(stopped.sendMessageStream(send("anyone there?"))));
    expect(streamRefused).toMatchObject({ code: -32050, data: { code: "upstream_unavailable" } });
  });
});

describe.each(
  clients,
)("the official SDK as an A2A %s client through the proxy to the official SDK's server", (_, connect) => {
  let client: Client;
  beforeAll(async () => {
    client = await connect(referenceId);
  });

  it("sends, streams and gets, and the server's own errors pass through", async () => {
    const direct = await client.sendMessage(send("hi"));
    expect(textOf((direct as Message).parts)).toBe("echo: hi");
    const task = await client.sendMessage(send("task: build"));
    if (!isTask(task)) throw new Error("expected a task");
    expect([task.status?.state, artifactText(task)]).toEqual([3, "done: build"]);
    const fetched = await client.getTask(GetTaskRequest.fromJSON({ id: task.id }));
    expect(artifactText(fetched)).toBe("done: build");

    const events = await collect(client.sendMessageStream(send("task: streamed")));
    expect(events.map((e) => e.$case)).toEqual(["task", "statusUpdate", "artifactUpdate", "statusUpdate"]);

    expect((await failure(client.getTask(GetTaskRequest.fromJSON({ id: "no-such-task" })))).code).toBe(
      -32001,
    );
    expect((await failure(client.cancelTask(CancelTaskRequest.fromJSON({ id: task.id })))).code).toBe(-32002);
  });
});

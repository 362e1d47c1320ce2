/**
 * The protocol's official JavaScript SDK (`@a2a-js/sdk`) as the client of this SDK's A2A server, in A2A 1.0 (its
 * default: discovery from the card, `SendMessage` …) and A2A 0.3 (its compatibility transport: `message/send` …).
 */
import {
  CancelTaskRequest,
  GetTaskRequest,
  ListTasksRequest,
  type Message,
  SendMessageRequest,
  type StreamResponse,
  SubscribeToTaskRequest,
  type Task,
} from "@a2a-js/sdk";
import { Client, ClientFactory } from "@a2a-js/sdk/client";
import { isLegacyAgentCard, LegacyJsonRpcTransport } from "@a2a-js/sdk/compat/v0_3/client";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { asTask } from "./a2a-handler.ts";
import { messageText } from "./a2a-protocol.ts";
import { type StartedA2AServer, startA2AServer } from "./a2a-server.ts";
import { InMemoryTaskStore } from "./task-store.ts";

/** A promise the test opens by hand. */
function gate() {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

const untilAborted = (signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });

let held = gate();
const stopped: string[] = [];
const store = new InMemoryTaskStore();
let server: StartedA2AServer;
let base = "";

beforeAll(async () => {
  server = await startA2AServer({
    host: "127.0.0.1",
    port: 0,
    taskStore: store,
    card: { name: "interop", description: "answers in the ways A2A allows", version: "1.0.0" },
    onMessage: (message, context) => {
      const text = messageText(message);
      if (text.startsWith("task:"))
        return asTask({ parts: [{ kind: "text", text: `done:${text.slice(5)}` }] });
      if (text === "ask")
        return asTask({ parts: [{ kind: "text", text: "which one?" }] }, { state: "input-required" });
      if (text === "slow") {
        return asTask(
          (async function* () {
            yield "started";
            await Promise.race([held.opened, untilAborted(context.signal)]);
            if (context.signal.aborted) {
              stopped.push(context.taskId);
              return;
            }
            yield " finished";
          })(),
        );
      }
      return { parts: [{ kind: "text", text: `echo: ${text}` }] };
    },
  });
  base = `http://127.0.0.1:${server.port}/`;
});
afterAll(() => server.close());
beforeEach(() => {
  held = gate();
});

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

/** The SDK's errors carry the JSON-RPC code they were made from. */
async function codeOf(call: Promise<unknown> | (() => Promise<unknown>)): Promise<number> {
  try {
    await (typeof call === "function" ? call() : call);
  } catch (err) {
    const e = err as { envelopeCode?: number; cause?: { envelopeCode?: number } };
    return e.envelopeCode ?? e.cause?.envelopeCode ?? Number.NaN;
  }
  throw new Error("the call succeeded");
}

const clients: [string, () => Promise<Client>][] = [
  // The SDK's default: it reads the card (asking for 1.0) and picks the 1.0 JSON-RPC interface from it.
  ["1.0", () => new ClientFactory().createFromUrl(base)],
  // The SDK's 0.3 transport on the same endpoint: 0.3 method names and shapes, no A2A-Version header sent as 1.0.
  [
    "0.3",
    async () => {
      const card = await (await new ClientFactory().createFromUrl(base)).getAgentCard();
      return new Client(new LegacyJsonRpcTransport({ endpoint: base }), card);
    },
  ],
];

describe.each(clients)("the official SDK as an A2A %s client", (version, connect) => {
  let client: Client;
  beforeAll(async () => {
    client = await connect();
  });

  it("speaks the version it was made for", () => {
    expect(client.protocolVersion).toBe(version);
  });

  it("sends: a direct answer comes back as a Message, a reply run as a task as a completed Task", async () => {
    const direct = await client.sendMessage(send("hi"));
    expect(isTask(direct)).toBe(false);
    expect(textOf((direct as Message).parts)).toBe("echo: hi");
    expect((direct as Message).contextId).not.toBe("");

    const task = await client.sendMessage(send("task: build"));
    if (!isTask(task)) throw new Error("expected a task");
    expect(task.status?.state).toBe(3); // TASK_STATE_COMPLETED
    expect(artifactText(task)).toBe("done: build");
    expect(textOf(task.history[0]?.parts)).toBe("task: build");
  });

  it("streams: the task, working, the reply, completed", async () => {
    const events = await collect(client.sendMessageStream(send("streamed")));
    expect(events.map((e) => e.$case)).toEqual(["task", "statusUpdate", "artifactUpdate", "statusUpdate"]);
    const [first, working, artifact, last] = events;
    expect(first?.$case === "task" && first.value.status?.state).toBe(1); // SUBMITTED
    expect(working?.$case === "statusUpdate" && working.value.status?.state).toBe(2); // WORKING
    expect(artifact?.$case === "artifactUpdate" && textOf(artifact.value.artifact?.parts)).toBe(
      "echo: streamed",
    );
    expect(last?.$case === "statusUpdate" && last.value.status?.state).toBe(3); // COMPLETED
    // The streamed task is kept: it can be fetched afterwards.
    const taskId = first?.$case === "task" ? first.value.id : "";
    const fetched = await client.getTask(GetTaskRequest.fromJSON({ id: taskId }));
    expect([fetched.status?.state, artifactText(fetched)]).toEqual([3, "echo: streamed"]);
  });

  it("gets a multi-turn task, its history cut to historyLength", async () => {
    const asked = await client.sendMessage(send("ask"));
    if (!isTask(asked)) throw new Error("expected a task");
    expect(asked.status?.state).toBe(6); // INPUT_REQUIRED
    expect(textOf(asked.status?.message?.parts)).toBe("which one?");

    const answered = await client.sendMessage(send("task: the blue one", { taskId: asked.id }));
    if (!isTask(answered)) throw new Error("expected a task");
    expect([answered.id, answered.contextId, answered.status?.state]).toEqual([asked.id, asked.contextId, 3]);

    const full = await client.getTask(GetTaskRequest.fromJSON({ id: asked.id }));
    expect(full.history.map((m) => textOf(m.parts))).toEqual(["ask", "which one?", "task: the blue one"]);
    const last = await client.getTask(GetTaskRequest.fromJSON({ id: asked.id, historyLength: 1 }));
    expect(last.history.map((m) => textOf(m.parts))).toEqual(["task: the blue one"]);
    const none = await client.getTask(GetTaskRequest.fromJSON({ id: asked.id, historyLength: 0 }));
    expect(none.history).toEqual([]);

    // A finished task takes no more messages (-32004, as the official SDK answers).
    expect(await codeOf(client.sendMessage(send("more", { taskId: asked.id })))).toBe(-32004);
  });

  it("cancels a running task: its handler is stopped, and canceling again answers the same", async () => {
    const started = await client.sendMessage(send("slow", { returnImmediately: true }));
    if (!isTask(started)) throw new Error("expected a task");
    expect(started.status?.state).toBe(2); // WORKING

    const canceled = await client.cancelTask(CancelTaskRequest.fromJSON({ id: started.id }));
    expect(canceled.status?.state).toBe(5); // CANCELED
    await expect.poll(() => stopped.includes(started.id)).toBe(true);
    expect((await client.getTask(GetTaskRequest.fromJSON({ id: started.id }))).status?.state).toBe(5);
    expect((await client.cancelTask(CancelTaskRequest.fromJSON({ id: started.id }))).status?.state).toBe(5);

    const done = await client.sendMessage(send("task: quick"));
    expect(await codeOf(client.cancelTask(CancelTaskRequest.fromJSON({ id: (done as Task).id })))).toBe(
      -32002,
    );
  });

  it("resubscribes to a running task: the task as it stands, then its updates to the end", async () => {
    const started = await client.sendMessage(send("slow", { returnImmediately: true }));
    if (!isTask(started)) throw new Error("expected a task");
    const events = client.resubscribeTask(SubscribeToTaskRequest.fromJSON({ id: started.id }));
    const first = await events.next();
    expect(first.value?.payload?.$case).toBe("task");
    held.open();
    const rest = await collect(events);
    const last = rest.at(-1);
    expect(last?.$case === "statusUpdate" && last.value.status?.state).toBe(3);
    const final = await client.getTask(GetTaskRequest.fromJSON({ id: started.id }));
    expect(artifactText(final)).toBe("started finished");
    // Nothing more to follow on a finished task.
    expect(
      await codeOf(() =>
        collect(client.resubscribeTask(SubscribeToTaskRequest.fromJSON({ id: started.id }))),
      ),
    ).toBe(-32004);
  });

  it("answers -32001 for a task it does not know, to get, cancel and resubscribe", async () => {
    expect(await codeOf(client.getTask(GetTaskRequest.fromJSON({ id: "no-such-task" })))).toBe(-32001);
    expect(await codeOf(client.cancelTask(CancelTaskRequest.fromJSON({ id: "no-such-task" })))).toBe(-32001);
    expect(
      await codeOf(() =>
        collect(client.resubscribeTask(SubscribeToTaskRequest.fromJSON({ id: "no-such-task" }))),
      ),
    ).toBe(-32001);
    expect(await codeOf(client.sendMessage(send("hi", { taskId: "no-such-task" })))).toBe(-32001);
  });
});

describe("A2A 1.0 only", () => {
  it("lists tasks by context, paged", async () => {
    const client = await new ClientFactory().createFromUrl(base);
    const first = (await client.sendMessage(send("task: one"))) as Task;
    const second = await client.sendMessage(
      SendMessageRequest.fromJSON({
        message: {
          messageId: "m-list",
          role: "ROLE_USER",
          parts: [{ text: "task: two" }],
          contextId: first.contextId,
        },
      }),
    );
    const page = await client.listTasks(
      ListTasksRequest.fromJSON({ contextId: first.contextId, pageSize: 1 }),
    );
    expect(page.totalSize).toBe(2);
    expect(page.tasks.map((t) => t.id)).toEqual([(second as Task).id]);
    expect(page.tasks[0]?.artifacts).toEqual([]);
    const next = await client.listTasks(
      ListTasksRequest.fromJSON({ contextId: first.contextId, pageSize: 1, pageToken: page.nextPageToken }),
    );
    expect(next.tasks.map((t) => t.id)).toEqual([first.id]);
    expect(next.nextPageToken).toBe("");
    const later = new Date(Date.now() + 60_000).toISOString();
    const none = await client.listTasks(
      ListTasksRequest.fromJSON({ contextId: first.contextId, statusTimestampAfter: later }),
    );
    expect([none.totalSize, none.tasks]).toEqual([0, []]);
    expect(
      await codeOf(client.listTasks(ListTasksRequest.fromJSON({ statusTimestampAfter: "yesterday" }))),
    ).toBe(-32602);
  });

  it("serves a 0.3 card without A2A-Version and a 1.0 card with A2A-Version: 1.0", async () => {
    const legacy = (await (await fetch(`${base}.well-known/agent-card.json`)).json()) as Record<
      string,
      unknown
    >;
    // With 1.0's interface list too, the SDK reads it as a 1.0 card (it keeps to 1.0); without, as a 0.3 one.
    const { supportedInterfaces, ...pure } = legacy;
    expect([isLegacyAgentCard(legacy), isLegacyAgentCard(pure)]).toEqual([false, true]);
    expect(supportedInterfaces).toHaveLength(2);
    expect(legacy).toMatchObject({ protocolVersion: "0.3.0", url: base, preferredTransport: "JSONRPC" });
    const current = (await (
      await fetch(`${base}.well-known/agent-card.json`, { headers: { "A2A-Version": "1.0" } })
    ).json()) as Record<string, unknown>;
    expect(isLegacyAgentCard(current)).toBe(false);
    expect(current.supportedInterfaces).toEqual([
      { url: base, protocolBinding: "JSONRPC", protocolVersion: "1.0" },
      { url: base, protocolBinding: "JSONRPC", protocolVersion: "0.3" },
    ]);
    expect(current.url).toBeUndefined();
  });
});

describe("malformed envelopes, in either version", () => {
  const post = async (body: string, headers: Record<string, string> = {}) => {
    const res = await fetch(base, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body,
    });
    expect(res.status).toBe(200);
    return (await res.json()) as { id: unknown; error?: { code: number; data?: unknown } };
  };

  it.each<Record<string, string>>([{}, { "A2A-Version": "1.0" }])("with headers %j", async (headers) => {
    expect(await post("{oops", headers)).toMatchObject({ id: null, error: { code: -32700 } });
    expect(await post(JSON.stringify({ jsonrpc: "2.0", id: 5, method: 7 }), headers)).toMatchObject({
      id: 5,
      error: { code: -32600 },
    });
    expect(await post(JSON.stringify({ id: 6, method: "SendMessage", params: {} }), headers)).toMatchObject({
      id: 6,
      error: { code: -32600 },
    });
    for (const method of ["tasks/nope", "NoSuchMethod"]) {
      expect(
        await post(JSON.stringify({ jsonrpc: "2.0", id: "u", method, params: {} }), headers),
      ).toMatchObject({
        id: "u",
        error: { code: -32601 },
      });
    }
    expect(
      await post(
        JSON.stringify({ jsonrpc: "2.0", id: 8, method: "SendMessage", params: { message: {} } }),
        headers,
      ),
    ).toMatchObject({ id: 8, error: { code: -32602 } });
    expect(
      await post(JSON.stringify({ jsonrpc: "2.0", id: 9, method: "tasks/get", params: "x" }), headers),
    ).toMatchObject({ id: 9, error: { code: -32602 } });
  });

  it("answers -32009 to a version it does not speak, and 1.0 errors carry A2A's ErrorInfo", async () => {
    const body = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "GetTask", params: { id: "x" } });
    expect(await post(body, { "A2A-Version": "2.0" })).toMatchObject({ id: 1, error: { code: -32009 } });
    expect(await post(body, { "A2A-Version": "1.0" })).toMatchObject({
      id: 1,
      error: { code: -32001, data: [{ reason: "TASK_NOT_FOUND", domain: "a2a-protocol.org" }] },
    });
  });
});

/**
 * The A2A JSON-RPC methods, in both protocol versions. As the official SDK routes them, the method name picks the
 * version's shapes (1.0's PascalCase names, anything else 0.3's), and the `A2A-Version` header must name a version
 * this server speaks (0.3 when absent); the card it serves follows the header too (`a2a-card.ts`).
 *
 * | 0.3                 | 1.0                    |                                                            |
 * |---------------------|------------------------|------------------------------------------------------------|
 * | `message/send`      | `SendMessage`          | a Message, or the Task when the handler runs it as one      |
 * | `message/stream`    | `SendStreamingMessage` | SSE: the task, `working`, artifact updates, the last status |
 * | `tasks/get`         | `GetTask`              | the task, its history cut to `historyLength`                |
 * | `tasks/cancel`      | `CancelTask`           | the task, `canceled`; -32002 once it has ended otherwise    |
 * | `tasks/resubscribe` | `SubscribeToTask`      | SSE: the task as it stands, then its updates to the last    |
 * | (none in 0.3)       | `ListTasks`            | tasks by context and state, paged                           |
 */
import { randomUUID } from "node:crypto";
import type { ServerResponse } from "node:http";
import { A2A_VERSION_HEADER, requestedVersion } from "./a2a-card.ts";
import { type Dialect, dialectOf } from "./a2a-dialects.ts";
import {
  type HandlerAnswer,
  type HandlerResult,
  isAgentReply,
  isTaskReply,
  type MessageContext,
  type MessageHandler,
  partsBuilder,
  pieces,
  type TaskReplyState,
} from "./a2a-handler.ts";
import {
  type A2AMessage,
  A2ARequestError,
  type A2ATask,
  asRecord,
  isTerminal,
  JSONRPC_ERRORS,
  type JsonRpcErrorCode,
  type Part,
  type StreamEvent,
  type TaskState,
} from "./a2a-protocol.ts";
import { stateFromV1, taskToV1 } from "./a2a-v1.ts";
import { errorFields, type Logger } from "./log.ts";
import type { TaskHub, TaskListener, TaskRun } from "./task-hub.ts";

export type JsonRpcId = string | number | null;

export interface RpcDeps {
  onMessage: MessageHandler;
  hub: TaskHub;
  log: Logger;
  /** Aborted when the server closes. */
  closing: AbortSignal;
}

/** One validated JSON-RPC request and where its answer goes. */
export interface RpcCall {
  id: JsonRpcId;
  /** No id: the method runs, the answer is 204 with no body. */
  notification: boolean;
  method: string;
  params: unknown;
  /** The request's `A2A-Version` header. */
  versionHeader: string | string[] | undefined;
  res: ServerResponse;
}

const fail = (code: JsonRpcErrorCode, message: string) => new A2ARequestError(code, message);

/** Answers one JSON-RPC request. Errors other than `A2ARequestError` are the caller's to log and answer. */
export async function dispatch(call: RpcCall, deps: RpcDeps): Promise<void> {
  const dialect = dialectOf(call.method);
  const answer = (result: unknown) => respond(call, { result });
  try {
    if (requestedVersion(call.versionHeader) === null) {
      throw fail(
        JSONRPC_ERRORS.versionNotSupported,
        `${A2A_VERSION_HEADER} ${String(call.versionHeader)} is not supported: this agent speaks A2A 1.0 and 0.3`,
      );
    }
    const operation = Object.hasOwn(dialect.operations, call.method)
      ? dialect.operations[call.method]
      : undefined;
    if (!operation) throw fail(JSONRPC_ERRORS.methodNotFound, `method not found: ${call.method}`);
    const params = asRecord(call.params);
    if (!params && operation !== "extendedCard") {
      throw fail(JSONRPC_ERRORS.invalidParams, "invalid params: params must be an object");
    }
    const p = params ?? {};
    switch (operation) {
      case "send":
        return await send(call, dialect, p, deps);
      case "stream":
        // A notification has no answer to stream: it runs like a send and gets 204.
        return call.notification ? await send(call, dialect, p, deps) : await stream(call, dialect, p, deps);
      case "get": {
        const task = await deps.hub.current(taskIdParam(p));
        if (!task) throw taskNotFound(taskIdParam(p));
        return answer(dialect.task(withHistory(task, historyLengthParam(p))));
      }
      case "cancel":
        return answer(dialect.task(await cancel(taskIdParam(p), deps.hub)));
      case "subscribe":
        return await resubscribe(call, dialect, taskIdParam(p), deps);
      case "list":
        return answer(await listTasks(p, deps));
      case "pushConfig":
        throw fail(JSONRPC_ERRORS.pushNotificationNotSupported, "this agent sends no push notifications");
      case "extendedCard":
        throw fail(JSONRPC_ERRORS.unsupportedOperation, "this agent has no authenticated extended card");
    }
  } catch (err) {
    if (!(err instanceof A2ARequestError)) throw err;
    if (call.res.headersSent) return endWithError(call, dialect, err);
    respond(call, { error: dialect.error(err.code, err.message) });
  }
}

/** `message/send`, `SendMessage`. */
async function send(call: RpcCall, dialect: Dialect, params: Record<string, unknown>, deps: RpcDeps) {
  const message = checkedMessage(dialect, params);
  const configuration = asRecord(params.configuration) ?? {};
  const historyLength = historyLengthParam(configuration);
  const exchange = await prepare(message, deps.hub);
  const stop = new AbortController();
  let detached = false;
  call.res.on("close", () => {
    if (!call.res.writableFinished && !detached) stop.abort();
  });
  const signal = AbortSignal.any([stop.signal, deps.closing]);

  let answer: HandlerAnswer;
  try {
    answer = await deps.onMessage(message, exchange.context(signal, call.id));
  } catch (err) {
    if (signal.aborted) return;
    deps.log("error", "a2a_handler_failed", { method: call.method, ...errorFields(err) });
    throw fail(JSONRPC_ERRORS.internalError, "internal error");
  }

  if (isTaskReply(answer)) {
    detached = true;
    const run = await exchange.begin(message, "working", stop, deps.hub);
    const done = runReply(run, async () => answer, signal, deps);
    if (!dialect.blocking(configuration)) {
      done.catch((err: unknown) => deps.log("error", "a2a_task_failed", errorFields(err)));
      return respond(call, {
        result: dialect.sendResult(withHistory(structuredClone(run.task), historyLength)),
      });
    }
    await done;
    const task = (await deps.hub.current(run.id)) ?? run.task;
    return respond(call, { result: dialect.sendResult(withHistory(task, historyLength)) });
  }

  const { parts, add } = partsBuilder();
  try {
    for await (const piece of pieces(answer)) {
      if (signal.aborted) break;
      add(piece);
    }
  } catch (err) {
    if (signal.aborted) return;
    deps.log("error", "a2a_handler_failed", { method: call.method, ...errorFields(err) });
    throw fail(JSONRPC_ERRORS.internalError, "internal error");
  }
  if (signal.aborted) return;
  const whole = isAgentReply(answer) ? answer : { parts };
  const reply: A2AMessage = {
    kind: "message",
    role: "agent",
    parts,
    messageId: whole.messageId ?? randomUUID(),
    contextId: whole.contextId ?? exchange.contextId,
    ...(message.taskId ? { taskId: message.taskId } : {}),
    ...(whole.metadata ? { metadata: whole.metadata } : {}),
  };
  respond(call, { result: dialect.sendResult(reply) });
}

/** `message/stream`, `SendStreamingMessage`: the task, `working`, one artifact update per piece, the last status. */
async function stream(call: RpcCall, dialect: Dialect, params: Record<string, unknown>, deps: RpcDeps) {
  const message = checkedMessage(dialect, params);
  const exchange = await prepare(message, deps.hub);
  const stop = new AbortController();
  let detached = false;
  let unfollow = () => {};
  call.res.on("close", () => {
    unfollow();
    if (!call.res.writableFinished && !detached) stop.abort();
  });
  const signal = AbortSignal.any([stop.signal, deps.closing]);
  const out = eventWriter(call, dialect);

  const run = await exchange.begin(message, "submitted", stop, deps.hub);
  out.open();
  await out.write(structuredClone(run.task));
  const listener: TaskListener = (update) => out.write(update);
  unfollow = deps.hub.follow(run, listener);
  await deps.hub.update(run, {
    kind: "status-update",
    taskId: run.id,
    contextId: run.task.contextId,
    status: { state: "working", timestamp: new Date().toISOString() },
    final: false,
  });
  const outcome = await runReply(
    run,
    async () => {
      const answer = await deps.onMessage(message, exchange.context(signal, call.id));
      if (!isTaskReply(answer)) return { runAs: "task", reply: answer, state: "completed" };
      detached = true;
      return answer;
    },
    signal,
    deps,
    listener,
  );
  if (outcome === "failed") {
    await out.raw({
      jsonrpc: "2.0",
      id: call.id,
      error: dialect.error(JSONRPC_ERRORS.internalError, "internal error"),
    });
  }
  if (outcome === "stopped" && !call.res.writableEnded)
    deps.log("info", "a2a_stream_abandoned", { taskId: run.id });
  call.res.end();
}

/** `tasks/resubscribe`, `SubscribeToTask`: the task as it stands, then its updates until its run ends. */
async function resubscribe(call: RpcCall, dialect: Dialect, taskId: string, deps: RpcDeps) {
  const out = eventWriter(call, dialect);
  // A 0.3 client reads this method's answer as a stream whatever happens (as the official SDK sends it).
  if (dialect.version === "0.3") out.open();
  const run = deps.hub.running(taskId);
  const task = run ? structuredClone(run.task) : await deps.hub.store.load(taskId);
  if (!task) throw taskNotFound(taskId);
  if (isTerminal(task.status.state)) {
    throw fail(
      JSONRPC_ERRORS.unsupportedOperation,
      `task ${taskId} is ${task.status.state}: there is nothing more to follow`,
    );
  }
  out.open();
  if (run && !run.finished) {
    const unfollow = deps.hub.follow(run, async (update) => {
      await out.write(update);
      if (update.kind === "status-update" && update.final) call.res.end();
    });
    call.res.on("close", unfollow);
    await out.write(task);
    return;
  }
  // Not running here (waiting for input, or started by another process): the task is all there is to send.
  await out.write(task);
  call.res.end();
}

/**
 * `ListTasks` (1.0 only): newest first, `pageSize` (1-100, default 50) at a time, artifacts only when asked, those
 * updated at or after `statusTimestampAfter` when given. `pageSize` in the answer is the one used, as the official SDK
 * answers it.
 */
async function listTasks(params: Record<string, unknown>, deps: RpcDeps) {
  const pageSize = params.pageSize ?? 50;
  if (typeof pageSize !== "number" || !Number.isInteger(pageSize) || pageSize < 1 || pageSize > 100) {
    throw fail(JSONRPC_ERRORS.invalidParams, "invalid params: pageSize must be an integer from 1 to 100");
  }
  const offset = params.pageToken ? Number(params.pageToken) : 0;
  if (!Number.isInteger(offset) || offset < 0)
    throw fail(JSONRPC_ERRORS.invalidParams, "invalid params: pageToken");
  let state: TaskState | undefined;
  if (params.status !== undefined && params.status !== "TASK_STATE_UNSPECIFIED" && params.status !== 0) {
    state = stateFromV1(params.status);
    if (!state) throw fail(JSONRPC_ERRORS.invalidParams, "invalid params: status is not a task state");
  }
  if (params.contextId !== undefined && typeof params.contextId !== "string") {
    throw fail(JSONRPC_ERRORS.invalidParams, "invalid params: contextId must be a string");
  }
  const after = params.statusTimestampAfter;
  if (
    after !== undefined &&
    (typeof after !== "string" || !ISO_TIMESTAMP.test(after) || Number.isNaN(Date.parse(after)))
  ) {
    throw fail(
      JSONRPC_ERRORS.invalidParams,
      "invalid params: statusTimestampAfter must be an ISO 8601 timestamp",
    );
  }
  const historyLength = historyLengthParam(params);
  const listed = await deps.hub.store.list({
    ...(params.contextId ? { contextId: params.contextId as string } : {}),
    ...(state ? { state } : {}),
  });
  const all = after
    ? listed.filter((task) => Date.parse(task.status.timestamp) >= Date.parse(after))
    : listed;
  const page = all.slice(offset, offset + pageSize).map((task) => {
    const shown = withHistory(task, historyLength);
    if (params.includeArtifacts !== true) delete shown.artifacts;
    return taskToV1(shown);
  });
  return {
    tasks: page,
    nextPageToken: offset + pageSize < all.length ? String(offset + pageSize) : "",
    pageSize,
    totalSize: all.length,
  };
}

/** Cancels a task: its run stops, and it ends `canceled`. Canceling a canceled task answers it again. */
async function cancel(taskId: string, hub: TaskHub): Promise<A2ATask> {
  const run = hub.running(taskId);
  if (run) {
    run.stop.abort();
    await hub.finish(run, { state: "canceled" });
    return (await hub.current(taskId)) ?? structuredClone(run.task);
  }
  const task = await hub.store.load(taskId);
  if (!task) throw taskNotFound(taskId);
  if (task.status.state === "canceled") return task;
  if (isTerminal(task.status.state)) {
    throw fail(
      JSONRPC_ERRORS.taskNotCancelable,
      `task ${taskId} is ${task.status.state} and cannot be canceled`,
    );
  }
  task.status = { state: "canceled", timestamp: new Date().toISOString() };
  await hub.store.save(task);
  return task;
}

/** An ISO 8601 date, or date and time (Date.parse alone also takes "-1", a year). */
const ISO_TIMESTAMP = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$/;

type RunOutcome = "ended" | "failed" | "stopped";

/**
 * Runs a reply as the task's updates: each piece an artifact update (or, for `input-required` and `rejected`, the
 * status message), then its last status. A failure ends the task `failed` (the `quiet` follower is not told: it
 * reports the failure its own way); a stop (cancel, client gone, server closing) ends it `canceled`.
 */
async function runReply(
  run: TaskRun,
  produce: () => Promise<{ reply: HandlerResult; state: TaskReplyState }>,
  signal: AbortSignal,
  deps: RpcDeps,
  quiet?: TaskListener,
): Promise<RunOutcome> {
  const { id: taskId } = run;
  const contextId = run.task.contextId;
  const artifactId = randomUUID();
  const said = partsBuilder();
  let state: TaskReplyState = "completed";
  let metadata: Record<string, unknown> | undefined;
  try {
    const produced = await produce();
    state = produced.state;
    const whole = isAgentReply(produced.reply);
    if (whole) metadata = (produced.reply as { metadata?: Record<string, unknown> }).metadata;
    let sent = 0;
    for await (const piece of pieces(produced.reply)) {
      if (signal.aborted) break;
      if (state !== "completed") {
        said.add(piece);
        continue;
      }
      await deps.hub.update(run, {
        kind: "artifact-update",
        taskId,
        contextId,
        artifact: { artifactId, name: "reply", parts: partsBuilder().add(piece) },
        append: sent > 0,
        ...(whole ? { lastChunk: true } : {}),
      });
      sent++;
    }
  } catch (err) {
    if (!signal.aborted) {
      deps.log("error", "a2a_handler_failed", { taskId, ...errorFields(err) });
      await deps.hub.finish(
        run,
        {
          state: "failed",
          message: agentMessage([{ kind: "text", text: "internal error" }], taskId, contextId),
        },
        { ...(quiet ? { quiet } : {}) },
      );
      return "failed";
    }
  }
  if (signal.aborted) {
    await deps.hub.finish(run, { state: "canceled" });
    return "stopped";
  }
  await deps.hub.finish(
    run,
    { state, ...(state === "completed" ? {} : { message: agentMessage(said.parts, taskId, contextId) }) },
    { ...(metadata ? { metadata } : {}) },
  );
  return "ended";
}

/** The task a message starts or continues: ids, the task it continues, and how to begin its run. */
async function prepare(message: A2AMessage, hub: TaskHub) {
  let existing: A2ATask | undefined;
  if (message.taskId) {
    existing = await hub.current(message.taskId);
    if (!existing) throw taskNotFound(message.taskId);
    if (isTerminal(existing.status.state)) {
      throw fail(
        JSONRPC_ERRORS.unsupportedOperation,
        `task ${existing.id} is ${existing.status.state} and takes no more messages`,
      );
    }
    if (hub.running(existing.id)) {
      throw fail(
        JSONRPC_ERRORS.unsupportedOperation,
        `task ${existing.id} is still working; wait for it to stop`,
      );
    }
    if (message.contextId && message.contextId !== existing.contextId) {
      throw fail(
        JSONRPC_ERRORS.invalidParams,
        `invalid params: message.contextId does not match task ${existing.id}'s context`,
      );
    }
  }
  const taskId = existing?.id ?? randomUUID();
  const contextId = existing?.contextId ?? message.contextId ?? randomUUID();
  return {
    contextId,
    context: (signal: AbortSignal, requestId: JsonRpcId): MessageContext => ({
      signal,
      requestId,
      taskId,
      contextId,
      ...(existing ? { task: structuredClone(existing) } : {}),
    }),
    /** Starts the run: the task (new, or the one continued) with the message in its history, in `state`. */
    begin: (received: A2AMessage, state: TaskState, stop: AbortController, h: TaskHub) => {
      const timestamp = new Date().toISOString();
      const task: A2ATask = existing
        ? structuredClone(existing)
        : { kind: "task", id: taskId, contextId, status: { state, timestamp }, history: [] };
      task.history.push({ ...received, kind: "message", taskId, contextId });
      task.status = { state, timestamp };
      return h.begin(task, stop);
    },
  };
}

function agentMessage(parts: Part[], taskId: string, contextId: string): A2AMessage {
  return { kind: "message", role: "agent", parts, messageId: randomUUID(), taskId, contextId };
}

/** A copy of the task with at most `historyLength` of its latest messages (all when undefined, none for 0). */
function withHistory(task: A2ATask, historyLength: number | undefined): A2ATask {
  const copy = structuredClone(task);
  if (historyLength !== undefined)
    copy.history = historyLength <= 0 ? [] : copy.history.slice(-historyLength);
  return copy;
}

function checkedMessage(dialect: Dialect, params: Record<string, unknown>): A2AMessage {
  const message = dialect.message(params);
  if (typeof message === "string") throw fail(JSONRPC_ERRORS.invalidParams, `invalid params: ${message}`);
  return message;
}

function taskIdParam(params: Record<string, unknown>): string {
  if (typeof params.id !== "string" || params.id === "") {
    throw fail(JSONRPC_ERRORS.invalidParams, "invalid params: id must be a non-empty string");
  }
  return params.id;
}

function historyLengthParam(params: Record<string, unknown>): number | undefined {
  const value = params.historyLength;
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
    throw fail(JSONRPC_ERRORS.invalidParams, "invalid params: historyLength must be a non-negative integer");
  }
  return value;
}

const taskNotFound = (taskId: string) => fail(JSONRPC_ERRORS.taskNotFound, `task not found: ${taskId}`);

function respond(call: RpcCall, body: { result: unknown } | { error: unknown }): void {
  const { res } = call;
  if (res.headersSent || res.destroyed) return;
  if (call.notification) {
    res.writeHead(204).end();
    return;
  }
  const text = JSON.stringify({ jsonrpc: "2.0", id: call.id, ...body });
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/** An error after the stream has begun: the last event, then the end. */
async function endWithError(call: RpcCall, dialect: Dialect, err: A2ARequestError): Promise<void> {
  await eventWriter(call, dialect).raw({
    jsonrpc: "2.0",
    id: call.id,
    error: dialect.error(err.code, err.message),
  });
  call.res.end();
}

/** Server-sent events of one stream, written in order, each as a JSON-RPC response carrying it. */
function eventWriter(call: RpcCall, dialect: Dialect) {
  const { res } = call;
  let chain = Promise.resolve();
  const enqueue = (payload: unknown) => {
    chain = chain.then(() => writeEvent(res, payload));
    return chain;
  };
  return {
    open() {
      if (!res.headersSent)
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    },
    write: (event: StreamEvent) => enqueue({ jsonrpc: "2.0", id: call.id, result: dialect.event(event) }),
    raw: enqueue,
  };
}

/** Writes one server-sent event; waits while the client is slow to read, returns at once once it is gone. */
async function writeEvent(res: ServerResponse, payload: unknown): Promise<void> {
  if (res.destroyed || res.writableEnded) return;
  if (res.write(`data: ${JSON.stringify(payload)}\n\n`)) return;
  await new Promise<void>((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}

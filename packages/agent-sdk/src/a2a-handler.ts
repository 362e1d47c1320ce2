/** What an agent gives the A2A server: a handler for each message, and the kinds of reply it may return. */
import type { A2AMessage, A2ATask, Part, TextPart } from "./a2a-protocol.ts";

/** What a handler returns: at least the parts; the server fills kind, role, messageId and contextId. */
export interface AgentReply {
  parts: Part[];
  messageId?: string;
  contextId?: string;
  metadata?: Record<string, unknown>;
}

/** One piece of a streamed reply: text (consecutive pieces join into one text part) or a whole part. */
export type ReplyChunk = string | Part;

/** A whole reply, or its pieces as they become ready (e.g. an async generator of text). */
export type HandlerResult = AgentReply | AsyncIterable<ReplyChunk>;

/** States a task run by the handler may end in (a failure or a cancel ends it in `failed` or `canceled`). */
export type TaskReplyState = "completed" | "input-required" | "rejected";

/**
 * A reply that runs as a task (see `asTask`): `message/send` answers with the Task, which the client can follow with
 * `tasks/get`, `tasks/resubscribe` and `tasks/cancel`, and the task keeps running when the client goes away.
 */
export interface TaskReply {
  runAs: "task";
  reply: HandlerResult;
  /** Default `completed`. With `input-required` or `rejected` the reply is the status message, not an artifact. */
  state: TaskReplyState;
}

/** Runs `reply` as a task; see `TaskReply`. */
export function asTask(reply: HandlerResult, options: { state?: TaskReplyState } = {}): TaskReply {
  return { runAs: "task", reply, state: options.state ?? "completed" };
}

export interface MessageContext {
  /** Aborted when the task is canceled, the server closes, or (unless the reply runs as a task) the client leaves. */
  signal: AbortSignal;
  /** The JSON-RPC request id. */
  requestId: string | number | null;
  /** The task this exchange is, or becomes if the reply runs as one (the message's own `taskId` when it has one). */
  taskId: string;
  contextId: string;
  /** The task the message continues (it named it in `taskId`), as it stood before this message. */
  task?: A2ATask;
}

/**
 * Answers one message. Either kind of result serves both methods: `message/send` waits for all the pieces and answers
 * a Message, `message/stream` sends each piece as it comes (a whole reply is one artifact update) as the updates of a
 * task. Wrapped in `asTask`, `message/send` answers a Task too. A handler should stop when `context.signal` aborts; a
 * streamed one is also not asked for more pieces once it has.
 */
export type MessageHandler = (
  message: A2AMessage,
  context: MessageContext,
) => HandlerAnswer | Promise<HandlerAnswer>;

export type HandlerAnswer = HandlerResult | TaskReply;

export function isTaskReply(answer: HandlerAnswer): answer is TaskReply {
  return asObject(answer)?.runAs === "task";
}

export function isAgentReply(result: HandlerResult): result is AgentReply {
  return !(result !== null && typeof result === "object" && Symbol.asyncIterator in result);
}

/** The reply as pieces: a whole reply is one piece (all its parts), a streamed one yields its own. */
export async function* pieces(result: HandlerResult): AsyncIterable<ReplyChunk | Part[]> {
  if (isAgentReply(result)) {
    if (!result || !Array.isArray(result.parts)) throw new TypeError("handler returned no parts");
    if (result.parts.length > 0) yield result.parts;
    return;
  }
  yield* result;
}

/** Collects pieces into parts: consecutive text pieces join into one text part; parts are kept as they are. */
export function partsBuilder(): { parts: Part[]; add(piece: ReplyChunk | Part[]): Part[] } {
  const parts: Part[] = [];
  let openText: TextPart | null = null;
  return {
    parts,
    add(piece) {
      if (typeof piece === "string") {
        if (openText) openText.text += piece;
        else {
          openText = { kind: "text", text: piece };
          parts.push(openText);
        }
        return parts;
      }
      openText = null;
      for (const part of Array.isArray(piece) ? piece : [piece]) {
        if (part === null || typeof part !== "object" || typeof part.kind !== "string") {
          throw new TypeError("handler gave something that is neither text nor a part");
        }
        parts.push(part);
      }
      return parts;
    },
  };
}

function asObject(value: unknown): Record<string, unknown> | null {
  return value !== null && typeof value === "object" ? (value as Record<string, unknown>) : null;
}

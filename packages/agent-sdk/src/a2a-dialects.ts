/**
 * How each protocol version names its JSON-RPC methods and shapes its answers: A2A 0.3 (`message/send` …, the
 * objects as they are) and A2A 1.0 (`SendMessage` …, translated by `a2a-v1.ts`).
 */
import type { ProtocolVersion } from "./a2a-card.ts";
import {
  type A2AMessage,
  type A2ATask,
  asRecord,
  ERROR_REASONS,
  type JsonRpcErrorCode,
  type StreamEvent,
} from "./a2a-protocol.ts";
import { eventToV1, isV1Method, messageFromV1, messageToV1, taskToV1 } from "./a2a-v1.ts";

export type Operation =
  | "send"
  | "stream"
  | "get"
  | "cancel"
  | "subscribe"
  | "list"
  | "pushConfig"
  | "extendedCard";

/** How one protocol version names its methods and shapes its answers. */
export interface Dialect {
  version: ProtocolVersion;
  operations: Record<string, Operation>;
  /** The message of a send, or a string saying what is wrong with it. */
  message(params: Record<string, unknown>): A2AMessage | string;
  /** Whether a send waits for the task to stop running before it answers. */
  blocking(configuration: Record<string, unknown>): boolean;
  task(task: A2ATask): unknown;
  sendResult(result: A2ATask | A2AMessage): unknown;
  event(event: StreamEvent): unknown;
  error(code: JsonRpcErrorCode, message: string): { code: number; message: string; data?: unknown };
}

export const V03: Dialect = {
  version: "0.3",
  operations: {
    "message/send": "send",
    "message/stream": "stream",
    "tasks/get": "get",
    "tasks/cancel": "cancel",
    "tasks/resubscribe": "subscribe",
    "tasks/pushNotificationConfig/set": "pushConfig",
    "tasks/pushNotificationConfig/get": "pushConfig",
    "tasks/pushNotificationConfig/list": "pushConfig",
    "tasks/pushNotificationConfig/delete": "pushConfig",
    "agent/getAuthenticatedExtendedCard": "extendedCard",
  },
  message: (params) => messageFromV03(params.message),
  blocking: (configuration) => configuration.blocking !== false,
  task: taskToV03,
  sendResult: (result) => (result.kind === "task" ? taskToV03(result) : result),
  event: (event) => (event.kind === "task" ? taskToV03(event) : event),
  error: (code, message) => ({ code, message }),
};

export const V1: Dialect = {
  version: "1.0",
  operations: {
    SendMessage: "send",
    SendStreamingMessage: "stream",
    GetTask: "get",
    CancelTask: "cancel",
    SubscribeToTask: "subscribe",
    ListTasks: "list",
    CreateTaskPushNotificationConfig: "pushConfig",
    GetTaskPushNotificationConfig: "pushConfig",
    ListTaskPushNotificationConfigs: "pushConfig",
    DeleteTaskPushNotificationConfig: "pushConfig",
    GetExtendedAgentCard: "extendedCard",
  },
  message: (params) => messageFromV1(params.message),
  blocking: (configuration) => configuration.returnImmediately !== true,
  task: taskToV1,
  sendResult: (result) =>
    result.kind === "task" ? { task: taskToV1(result) } : { message: messageToV1(result) },
  event: eventToV1,
  error: (code, message) => {
    const reason = ERROR_REASONS[code];
    return reason
      ? {
          code,
          message,
          data: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason, domain: "a2a-protocol.org" }],
        }
      : { code, message };
  },
};

/** A task as 0.3 sends it: no empty `history` or `artifacts` (as the official SDK leaves them out). */
function taskToV03(task: A2ATask): A2ATask {
  const { history, artifacts, ...rest } = task;
  return {
    ...rest,
    ...(history.length ? { history } : {}),
    ...(artifacts?.length ? { artifacts } : {}),
  } as A2ATask;
}

/** The dialect of a method: 1.0's names are 1.0's, anything else is read as 0.3 (as the official SDK routes them). */
export const dialectOf = (method: string): Dialect => (isV1Method(method) ? V1 : V03);

/** The validated 0.3 message, or a string saying what is wrong. */
function messageFromV03(raw: unknown): A2AMessage | string {
  const message = asRecord(raw);
  if (!message) return "params.message must be an object";
  if (message.role !== "user" && message.role !== "agent") return 'message.role must be "user" or "agent"';
  if (typeof message.messageId !== "string" || message.messageId === "") {
    return "message.messageId must be a non-empty string";
  }
  if (!Array.isArray(message.parts) || message.parts.length === 0)
    return "message.parts must be a non-empty array";
  for (const [i, part] of message.parts.entries()) {
    const p = asRecord(part);
    if (!p || typeof p.kind !== "string") return `message.parts[${i}].kind must be a string`;
    if (p.kind === "text" && typeof p.text !== "string") return `message.parts[${i}].text must be a string`;
  }
  for (const key of ["contextId", "taskId"] as const) {
    if (message[key] !== undefined && typeof message[key] !== "string")
      return `message.${key} must be a string`;
  }
  return message as unknown as A2AMessage;
}

/**
 * A2A 1.0's JSON-RPC shapes (the proto3 JSON of `lf.a2a.v1`, as `@a2a-js/sdk` 1.x reads and writes them), translated
 * to and from the 0.3 shapes the server works in: parts without `kind` (`{text}`, `{data}`, `{url}`, `{raw}` with
 * `filename`/`mediaType`), `ROLE_USER`/`ROLE_AGENT`, `TASK_STATE_*`, stream results wrapped as `{task}`, `{message}`,
 * `{statusUpdate}` or `{artifactUpdate}` (no `kind`, no `final`), and `SendMessage` answering `{task}` or `{message}`.
 */
import {
  type A2AMessage,
  type A2ATask,
  type Artifact,
  asRecord,
  type Part,
  type StreamEvent,
  type TaskState,
  type TaskStatus,
} from "./a2a-protocol.ts";

/** The 1.0 method names; any other method is read as 0.3 (as the official SDK routes them). */
export const V1_METHODS = [
  "SendMessage",
  "SendStreamingMessage",
  "GetTask",
  "ListTasks",
  "CancelTask",
  "SubscribeToTask",
  "CreateTaskPushNotificationConfig",
  "GetTaskPushNotificationConfig",
  "ListTaskPushNotificationConfigs",
  "DeleteTaskPushNotificationConfig",
  "GetExtendedAgentCard",
] as const;

export const isV1Method = (method: string): boolean => (V1_METHODS as readonly string[]).includes(method);

const STATES: Record<TaskState, string> = {
  submitted: "TASK_STATE_SUBMITTED",
  working: "TASK_STATE_WORKING",
  "input-required": "TASK_STATE_INPUT_REQUIRED",
  "auth-required": "TASK_STATE_AUTH_REQUIRED",
  completed: "TASK_STATE_COMPLETED",
  canceled: "TASK_STATE_CANCELED",
  failed: "TASK_STATE_FAILED",
  rejected: "TASK_STATE_REJECTED",
  unknown: "TASK_STATE_UNSPECIFIED",
};

export const stateToV1 = (state: TaskState): string => STATES[state];

/** The states in the order of the proto enum's numbers. */
const PROTO_ORDER: TaskState[] = [
  "unknown",
  "submitted",
  "working",
  "completed",
  "failed",
  "canceled",
  "input-required",
  "rejected",
  "auth-required",
];

/** A 1.0 state name (or its proto number) as a 0.3 state; undefined when it names none. */
export function stateFromV1(value: unknown): TaskState | undefined {
  if (typeof value === "number") return PROTO_ORDER[value];
  return PROTO_ORDER.find((state) => STATES[state] === value);
}

function partToV1(part: Part): Record<string, unknown> {
  const { kind, metadata, ...rest } = part as Part & { metadata?: unknown };
  const meta = metadata === undefined ? {} : { metadata };
  if (kind === "text") return { text: (part as { text: string }).text, ...meta };
  if (kind === "data") return { data: (part as { data?: unknown }).data ?? null, ...meta };
  if (kind === "file") {
    const file = asRecord((part as { file?: unknown }).file) ?? {};
    return {
      ...(typeof file.uri === "string" ? { url: file.uri } : { raw: file.bytes ?? "" }),
      ...(typeof file.name === "string" ? { filename: file.name } : {}),
      ...(typeof file.mimeType === "string" ? { mediaType: file.mimeType } : {}),
      ...meta,
    };
  }
  // A kind 1.0 has no name for travels as data, whole.
  return { data: { kind, ...rest }, ...meta };
}

/** A 1.0 part as a 0.3 part, or a string saying what is wrong. */
function partFromV1(raw: unknown, where: string): Part | string {
  const part = asRecord(raw);
  if (!part) return `${where} must be an object`;
  const metadata = asRecord(part.metadata);
  const meta = metadata ? { metadata } : {};
  const present = ["text", "data", "url", "raw"].filter((key) => part[key] !== undefined);
  if (present.length !== 1) return `${where} must have exactly one of text, data, url, raw`;
  if (part.text !== undefined) {
    if (typeof part.text !== "string") return `${where}.text must be a string`;
    return { kind: "text", text: part.text, ...meta };
  }
  if (part.data !== undefined) return { kind: "data", data: part.data, ...meta };
  const content = part.url ?? part.raw;
  if (typeof content !== "string") return `${where}.url or .raw must be a string`;
  const file = {
    ...(part.url !== undefined ? { uri: content } : { bytes: content }),
    ...(typeof part.filename === "string" && part.filename !== "" ? { name: part.filename } : {}),
    ...(typeof part.mediaType === "string" && part.mediaType !== "" ? { mimeType: part.mediaType } : {}),
  };
  return { kind: "file", file, ...meta };
}

export function messageToV1(message: A2AMessage): Record<string, unknown> {
  return {
    messageId: message.messageId,
    ...(message.contextId ? { contextId: message.contextId } : {}),
    ...(message.taskId ? { taskId: message.taskId } : {}),
    role: message.role === "agent" ? "ROLE_AGENT" : "ROLE_USER",
    parts: message.parts.map(partToV1),
    ...(message.metadata ? { metadata: message.metadata } : {}),
    ...(message.extensions?.length ? { extensions: message.extensions } : {}),
    ...(message.referenceTaskIds?.length ? { referenceTaskIds: message.referenceTaskIds } : {}),
  };
}

/** A 1.0 message as a 0.3 message, or a string saying what is wrong. */
export function messageFromV1(raw: unknown): A2AMessage | string {
  const message = asRecord(raw);
  if (!message) return "params.message must be an object";
  const role =
    message.role === "ROLE_USER" || message.role === 1
      ? "user"
      : message.role === "ROLE_AGENT" || message.role === 2
        ? "agent"
        : null;
  if (!role) return 'message.role must be "ROLE_USER" or "ROLE_AGENT"';
  if (typeof message.messageId !== "string" || message.messageId === "") {
    return "message.messageId must be a non-empty string";
  }
  if (!Array.isArray(message.parts) || message.parts.length === 0) {
    return "message.parts must be a non-empty array";
  }
  const parts: Part[] = [];
  for (const [i, raw] of message.parts.entries()) {
    const part = partFromV1(raw, `message.parts[${i}]`);
    if (typeof part === "string") return part;
    parts.push(part);
  }
  for (const key of ["contextId", "taskId"] as const) {
    if (message[key] !== undefined && typeof message[key] !== "string")
      return `message.${key} must be a string`;
  }
  const metadata = asRecord(message.metadata);
  const strings = (value: unknown) =>
    Array.isArray(value) && value.every((v) => typeof v === "string") && value.length > 0
      ? (value as string[])
      : undefined;
  const referenceTaskIds = strings(message.referenceTaskIds);
  const extensions = strings(message.extensions);
  return {
    kind: "message",
    role,
    parts,
    messageId: message.messageId,
    // Proto3 JSON writes an unset string as "": the same as absent.
    ...(message.contextId ? { contextId: message.contextId as string } : {}),
    ...(message.taskId ? { taskId: message.taskId as string } : {}),
    ...(metadata ? { metadata } : {}),
    ...(referenceTaskIds ? { referenceTaskIds } : {}),
    ...(extensions ? { extensions } : {}),
  };
}

function statusToV1(status: TaskStatus): Record<string, unknown> {
  return {
    state: stateToV1(status.state),
    ...(status.message ? { message: messageToV1(status.message) } : {}),
    timestamp: status.timestamp,
  };
}

function artifactToV1(artifact: Artifact): Record<string, unknown> {
  return {
    artifactId: artifact.artifactId,
    ...(artifact.name ? { name: artifact.name } : {}),
    ...(artifact.description ? { description: artifact.description } : {}),
    parts: artifact.parts.map(partToV1),
    ...(artifact.metadata ? { metadata: artifact.metadata } : {}),
  };
}

export function taskToV1(task: A2ATask): Record<string, unknown> {
  return {
    id: task.id,
    contextId: task.contextId,
    status: statusToV1(task.status),
    ...(task.artifacts?.length ? { artifacts: task.artifacts.map(artifactToV1) } : {}),
    ...(task.history.length ? { history: task.history.map(messageToV1) } : {}),
    ...(task.metadata ? { metadata: task.metadata } : {}),
  };
}

/** A stream event as a 1.0 `StreamResponse`. */
export function eventToV1(event: StreamEvent | A2AMessage): Record<string, unknown> {
  switch (event.kind) {
    case "task":
      return { task: taskToV1(event) };
    case "status-update":
      return {
        statusUpdate: {
          taskId: event.taskId,
          contextId: event.contextId,
          status: statusToV1(event.status),
          ...(event.metadata ? { metadata: event.metadata } : {}),
        },
      };
    case "artifact-update":
      return {
        artifactUpdate: {
          taskId: event.taskId,
          contextId: event.contextId,
          artifact: artifactToV1(event.artifact),
          // Proto3 JSON leaves out a false flag.
          ...(event.append ? { append: true } : {}),
          ...(event.lastChunk ? { lastChunk: true } : {}),
        },
      };
    default:
      return { message: messageToV1(event) };
  }
}

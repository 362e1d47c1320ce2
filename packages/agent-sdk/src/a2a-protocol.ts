/**
 * The A2A objects the server works with, in A2A 0.3's JSON shapes (`kind` discriminators, kebab-case states). The
 * 0.3 wire uses them as they are; `a2a-v1.ts` translates them to and from A2A 1.0's shapes at the edge.
 */

export type TextPart = { kind: "text"; text: string; metadata?: Record<string, unknown> };
/** Other part kinds (file, data) pass through untouched. */
export type OtherPart = { kind: string; [field: string]: unknown };
export type Part = TextPart | OtherPart;

export interface A2AMessage {
  kind?: "message";
  role: "user" | "agent";
  parts: Part[];
  messageId: string;
  contextId?: string;
  taskId?: string;
  referenceTaskIds?: string[];
  extensions?: string[];
  metadata?: Record<string, unknown>;
}

export type TaskState =
  | "submitted"
  | "working"
  | "input-required"
  | "auth-required"
  | "completed"
  | "canceled"
  | "failed"
  | "rejected"
  | "unknown";

/** States after which a task takes no more messages and cannot be canceled. */
export const TERMINAL_STATES: readonly TaskState[] = ["completed", "canceled", "failed", "rejected"];

export const isTerminal = (state: TaskState): boolean => TERMINAL_STATES.includes(state);

export interface TaskStatus {
  state: TaskState;
  /** What the agent says with this status, e.g. the question of an `input-required` task. */
  message?: A2AMessage;
  timestamp: string;
}

export interface Artifact {
  artifactId: string;
  name?: string;
  description?: string;
  parts: Part[];
  metadata?: Record<string, unknown>;
}

export interface A2ATask {
  kind: "task";
  id: string;
  contextId: string;
  status: TaskStatus;
  /** The messages of the exchange, oldest first: what the client sent, and the agent's status messages. */
  history: A2AMessage[];
  artifacts?: Artifact[];
  metadata?: Record<string, unknown>;
}

/** The first event of a stream: the task as it stands. */
export type TaskEvent = A2ATask;

export interface TaskStatusUpdateEvent {
  kind: "status-update";
  taskId: string;
  contextId: string;
  status: TaskStatus;
  /** True on the last event of the stream. */
  final: boolean;
  metadata?: Record<string, unknown>;
}

export interface TaskArtifactUpdateEvent {
  kind: "artifact-update";
  taskId: string;
  contextId: string;
  artifact: Artifact;
  /** False for the first piece; true when the parts add to the artifact sent before. */
  append: boolean;
  /** Set on a whole reply, sent in one piece. */
  lastChunk?: boolean;
}

export type StreamEvent = TaskEvent | TaskStatusUpdateEvent | TaskArtifactUpdateEvent;

/** JSON-RPC 2.0's codes and A2A's own, as both protocol versions number them. */
export const JSONRPC_ERRORS = {
  parseError: -32700,
  invalidRequest: -32600,
  methodNotFound: -32601,
  invalidParams: -32602,
  internalError: -32603,
  taskNotFound: -32001,
  taskNotCancelable: -32002,
  pushNotificationNotSupported: -32003,
  unsupportedOperation: -32004,
  contentTypeNotSupported: -32005,
  invalidAgentResponse: -32006,
  versionNotSupported: -32009,
} as const;

export type JsonRpcErrorCode = (typeof JSONRPC_ERRORS)[keyof typeof JSONRPC_ERRORS];

/** A request the server refuses with a JSON-RPC error; its message is sent to the client as it is. */
export class A2ARequestError extends Error {
  readonly code: JsonRpcErrorCode;
  constructor(code: JsonRpcErrorCode, message: string) {
    super(message);
    this.name = "A2ARequestError";
    this.code = code;
  }
}

/** A2A 1.0's `ErrorInfo.reason` for its own codes (sent in `error.data` on the 1.0 wire). */
export const ERROR_REASONS: Partial<Record<JsonRpcErrorCode, string>> = {
  [JSONRPC_ERRORS.taskNotFound]: "TASK_NOT_FOUND",
  [JSONRPC_ERRORS.taskNotCancelable]: "TASK_NOT_CANCELABLE",
  [JSONRPC_ERRORS.pushNotificationNotSupported]: "PUSH_NOTIFICATION_NOT_SUPPORTED",
  [JSONRPC_ERRORS.unsupportedOperation]: "UNSUPPORTED_OPERATION",
  [JSONRPC_ERRORS.contentTypeNotSupported]: "CONTENT_TYPE_NOT_SUPPORTED",
  [JSONRPC_ERRORS.invalidAgentResponse]: "INVALID_AGENT_RESPONSE",
  [JSONRPC_ERRORS.versionNotSupported]: "VERSION_NOT_SUPPORTED",
  [JSONRPC_ERRORS.invalidParams]: "INVALID_PARAMS",
};

/** All text parts of a message joined with newlines. */
export function messageText(message: Pick<A2AMessage, "parts">): string {
  return message.parts
    .filter((p): p is TextPart => p.kind === "text" && typeof (p as TextPart).text === "string")
    .map((p) => p.text)
    .join("\n");
}

export function asRecord(value: unknown): Record<string, unknown> | null {
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : null;
}

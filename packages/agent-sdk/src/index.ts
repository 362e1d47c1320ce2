export { CALLER_HEADER, INBOUND_TOKEN_HEADER } from "@molecule/contracts/inbound";
export {
  A2A_VERSION_HEADER,
  cardFor,
  PROTOCOL_VERSIONS,
  type ProtocolVersion,
  requestedVersion,
} from "./a2a-card.ts";
export {
  type AgentReply,
  asTask,
  type HandlerAnswer,
  type HandlerResult,
  type MessageContext,
  type MessageHandler,
  type ReplyChunk,
  type TaskReply,
  type TaskReplyState,
} from "./a2a-handler.ts";
export {
  type A2AMessage,
  A2ARequestError,
  type A2ATask,
  type Artifact,
  isTerminal,
  JSONRPC_ERRORS,
  messageText,
  type OtherPart,
  type Part,
  type StreamEvent,
  type TaskArtifactUpdateEvent,
  type TaskEvent,
  type TaskState,
  type TaskStatus,
  type TaskStatusUpdateEvent,
  TERMINAL_STATES,
  type TextPart,
} from "./a2a-protocol.ts";
export {
  type A2AServerOptions,
  createA2AServer,
  DEFAULT_MAX_BODY_BYTES,
  type InboundAuth,
  type StartedA2AServer,
  startA2AServer,
} from "./a2a-server.ts";
export { eventToV1, isV1Method, messageFromV1, messageToV1, taskToV1, V1_METHODS } from "./a2a-v1.ts";
export {
  type AgentMessageContext,
  type AgentMessageHandler,
  type AgentReadyInfo,
  type AgentStop,
  type RunAgentOptions,
  runAgent,
} from "./agent.ts";
export { type BackoffOptions, backoffDelay, type Sleep, sleep } from "./backoff.ts";
export { materializeBootConfig } from "./boot-config.ts";
export { type CliRunOptions, runFlags } from "./cli.ts";
export {
  type AgentCard,
  type CallOptions,
  type FetchLike,
  type HeartbeatBody,
  type HeartbeatResult,
  type HeartbeatStatus,
  PlatformClient,
  type PlatformClientOptions,
  PlatformError,
  type RegisterResult,
} from "./client.ts";
export {
  CredentialManager,
  type CredentialManagerOptions,
  type CredentialSource,
  CredentialStore,
  CredentialsError,
  type CredentialsErrorCode,
  DEFAULT_STATE_DIR,
  defaultStateDir,
  type StoredCredentials,
} from "./credentials.ts";
export { ConfigError, type EchoConfig, loadEchoConfig } from "./echo-config.ts";
export { readEventStream } from "./event-stream.ts";
export {
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  type HeartbeatLoopOptions,
  type HeartbeatStop,
  runHeartbeatLoop,
} from "./heartbeat.ts";
export {
  createJsonLogger,
  type JsonLoggerOptions,
  type LogFields,
  type Logger,
  type LogLevel,
  redact,
  silentLogger,
} from "./log.ts";
export {
  InMemoryTaskStore,
  type InMemoryTaskStoreOptions,
  type TaskFilter,
  type TaskStore,
} from "./task-store.ts";

export { CALLER_HEADER, INBOUND_TOKEN_HEADER } from "@molecule/contracts/inbound";
export {
  type A2AMessage,
  type A2AServerOptions,
  type AgentReply,
  createA2AServer,
  DEFAULT_MAX_BODY_BYTES,
  type HandlerResult,
  type InboundAuth,
  JSONRPC_ERRORS,
  type MessageContext,
  type MessageHandler,
  messageText,
  type Part,
  type ReplyChunk,
  type StartedA2AServer,
  type StreamEvent,
  startA2AServer,
  type TaskArtifactUpdateEvent,
  type TaskEvent,
  type TaskState,
  type TaskStatus,
  type TaskStatusUpdateEvent,
  type TextPart,
} from "./a2a-server.ts";
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

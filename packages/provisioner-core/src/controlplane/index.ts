export {
  abortableSleep,
  ControlPlaneClient,
  type ControlPlaneClientOptions,
  type CpCall,
  type CpLogger,
  type CpReply,
  type CpRetryOptions,
  DEFAULT_CP_PROVISION_URL,
  DEFAULT_CP_RETRY,
  errorEnvelope,
  IDEMPOTENCY_KEY_HEADER,
} from "./client.ts";
export * from "./provisioner.ts";
export * from "./tenant.ts";

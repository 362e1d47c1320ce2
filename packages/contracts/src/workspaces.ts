import { z } from "zod";
import { OperationKind, OperationStatus, WorkspaceStatus } from "./status.ts";
import { isEnvText, multiLineText, singleLineText } from "./text.ts";

export const TIERS = [2, 3, 4] as const;
export const Tier = z.union([z.literal(2), z.literal(3), z.literal(4)], {
  error: "tier must be 2, 3 or 4",
});
export type Tier = z.infer<typeof Tier>;

/** Secret and metadata keys: what an environment variable name may be. */
export const SECRET_KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
export const SecretKey = z.string().regex(SECRET_KEY_PATTERN, "must look like an environment variable name");
/**
 * What an environment variable can carry: any text without NUL, which no process environment can hold (the engine
 * refuses the container, quoting the variable), and without an unpaired surrogate, which no UTF-8 environment can
 * hold either (it would reach the agent as U+FFFD, not as the value stored). Secret values and the control plane's
 * env values are this.
 */
export const EnvValue = z
  .string()
  .max(64 * 1024)
  .refine(isEnvText, "must not contain NUL (\\u0000) or unpaired surrogates");
export const SecretValue = EnvValue;

/** Names a runtime may not override: the platform owns them. */
export const RESERVED_ENV_KEYS = [
  "WORKSPACE_ID",
  "PLATFORM_URL",
  "WORKSPACE_BOOT_TOKEN",
  "HEARTBEAT_INTERVAL_SECONDS",
  "WORKSPACE_POOL_TOKEN",
] as const;

export function isReservedEnvKey(key: string): boolean {
  return (RESERVED_ENV_KEYS as readonly string[]).includes(key);
}

/**
 * A workspace secret's name, wherever a client gives one (create, `PUT` and `DELETE /workspaces/:id/secrets/:key`):
 * an environment variable name that the platform does not set itself.
 */
const RESERVED_MESSAGE = `secret names ${RESERVED_ENV_KEYS.join(", ")} are reserved: the platform sets them`;
export const WorkspaceSecretName = SecretKey.refine((key) => !isReservedEnvKey(key), RESERVED_MESSAGE);

/** A create body's secrets: each name judged as `WorkspaceSecretName` judges it, the reserved ones named by path. */
const WorkspaceSecrets = z
  .record(SecretKey, SecretValue)
  .refine((value) => Object.keys(value).length <= 100, "at most 100 secrets")
  .superRefine((value, ctx) => {
    for (const key of Object.keys(value)) {
      if (isReservedEnvKey(key)) ctx.addIssue({ code: "custom", path: [key], message: RESERVED_MESSAGE });
    }
  });

export const Metadata = z
  .record(singleLineText().max(64), z.union([multiLineText().max(1024), z.number(), z.boolean()]))
  .refine((value) => Object.keys(value).length <= 32, "at most 32 metadata keys");

/** The runtime name and backend label of a workspace whose agent runs elsewhere and only registers here. */
export const EXTERNAL_RUNTIME = "external";

/** True when a create body asks for an external workspace (`external: true`, or `runtime: "external"`). */
export function isExternalCreate(body: {
  external?: boolean | undefined;
  runtime?: string | undefined;
}): boolean {
  return body.external === true || (body.external === undefined && body.runtime === EXTERNAL_RUNTIME);
}

/** The longest idle time a workspace may ask for (30 days). */
export const MAX_IDLE_SUSPEND_SECONDS = 30 * 24 * 3600;

export const CreateWorkspaceBody = z
  .strictObject({
    name: singleLineText().trim().min(1).max(100),
    /** Required unless `external` is true; `"external"` alone means the same as `external: true`. */
    runtime: z
      .string()
      .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, "runtime must be a lower-case image name fragment")
      .optional(),
    /** The agent runs outside the platform (a laptop, a CI runner, on-prem) and registers with a one-time token. */
    external: z.boolean().optional(),
    /** External workspaces only: where the agent will listen, checked against the agent URL policy. */
    url: singleLineText().url().max(2048).optional(),
    tier: Tier.default(2),
    secrets: WorkspaceSecrets.optional(),
    metadata: Metadata.optional(),
    /**
     * Suspend the workspace after this many seconds with no A2A message to or from it and no activity reported in
     * its heartbeats; 0 or null: never. Absent: the platform's IDLE_SUSPEND_AFTER (off unless set).
     */
    idle_suspend_seconds: z
      .number()
      .int("idle_suspend_seconds must be a whole number of seconds")
      .min(0)
      .max(MAX_IDLE_SUSPEND_SECONDS, `idle_suspend_seconds is at most ${MAX_IDLE_SUSPEND_SECONDS} (30 days)`)
      .nullable()
      .optional(),
  })
  .superRefine((body, ctx) => {
    const external = isExternalCreate(body);
    if (external && body.idle_suspend_seconds) {
      ctx.addIssue({
        code: "custom",
        path: ["idle_suspend_seconds"],
        message: "an external workspace runs outside the platform and is never suspended by it",
      });
    }
    if (external && body.runtime !== undefined && body.runtime !== EXTERNAL_RUNTIME) {
      ctx.addIssue({
        code: "custom",
        path: ["runtime"],
        message: "an external workspace has no runtime image",
      });
    }
    if (!external && body.runtime === EXTERNAL_RUNTIME) {
      ctx.addIssue({
        code: "custom",
        path: ["external"],
        message: 'runtime "external" needs external: true',
      });
    }
    if (!external && body.runtime === undefined) {
      ctx.addIssue({ code: "custom", path: ["runtime"], message: "runtime is required (or external: true)" });
    }
    if (!external && body.url !== undefined) {
      ctx.addIssue({ code: "custom", path: ["url"], message: "url is only for external workspaces" });
    }
  });
export type CreateWorkspaceBody = z.infer<typeof CreateWorkspaceBody>;

export const WorkspaceView = z.object({
  id: z.string(),
  orgId: z.string(),
  name: z.string(),
  runtime: z.string(),
  tier: Tier,
  backend: z.string(),
  status: WorkspaceStatus,
  statusReason: z.string().nullable(),
  needsRestart: z.boolean(),
  url: z.string().nullable(),
  metadata: z.record(z.string(), z.unknown()),
  lastHeartbeatAt: z.string().nullable(),
  /** Seconds of idleness before the platform suspends it: 0 never, null the platform's IDLE_SUSPEND_AFTER. */
  idleSuspendSeconds: z.number().nullable(),
  /** The last A2A message to or from it, or activity its agent reported (written within a second or so). */
  lastActivityAt: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type WorkspaceView = z.infer<typeof WorkspaceView>;

export const OperationStepView = z.object({
  name: z.string(),
  startedAt: z.string(),
  durationMs: z.number(),
  detail: z.string().optional(),
});
export type OperationStepView = z.infer<typeof OperationStepView>;

export const OperationView = z.object({
  id: z.string(),
  workspaceId: z.string(),
  kind: OperationKind,
  status: OperationStatus,
  attempts: z.number(),
  steps: z.array(OperationStepView),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
  finishedAt: z.string().nullable(),
});
export type OperationView = z.infer<typeof OperationView>;

/**
 * The answer to a create or lifecycle request: the workspace's fields at the top level (so `jq -r .id` gives its id,
 * as the self-hosting guide's scripts expect), the same view under `workspace` (what the canvas, the CLIs and the
 * control plane's rollouts read), and the operation that was queued.
 */
export const AcceptedOperation = WorkspaceView.extend({ workspace: WorkspaceView, operation: OperationView });
export type AcceptedOperation = z.infer<typeof AcceptedOperation>;

/**
 * What an external agent needs to connect, given once in the create response. `registration_token` is one-time:
 * `POST /registry/register` spends it and answers the workspace's bearer token. A replay of the same create (same
 * Idempotency-Key and body) answers the same token while it is unused, and `null` with `registration_token_status:
 * "used"` after.
 */
export const ConnectionBundle = z.object({
  workspace_id: z.string(),
  platform_url: z.string(),
  registration_token: z.string().nullable(),
  registration_token_status: z.enum(["unused", "used"]),
  register_url: z.string(),
  heartbeat_url: z.string(),
  secrets_url: z.string(),
  /** Send a heartbeat at least this often; silence beyond `HEARTBEAT_STALE_AFTER` marks the workspace offline. */
  heartbeat_interval_seconds: z.number(),
  /** The agent URL given at creation, registered unless the agent sends its own. */
  agent_url: z.string().nullable(),
  /** Ready to paste; each embeds the token. Absent once the token is used. */
  snippets: z
    .object({ curl: z.string(), python: z.string(), typescript: z.string(), cli: z.string() })
    .nullable(),
});
export type ConnectionBundle = z.infer<typeof ConnectionBundle>;

export const CreatedWorkspace = AcceptedOperation.extend({ connection: ConnectionBundle.optional() });
export type CreatedWorkspace = z.infer<typeof CreatedWorkspace>;

export const PutSecretBody = z.strictObject({ value: SecretValue });

/** `GET /workspaces` (the `status` query filters). */
export const WorkspaceList = z.object({ workspaces: z.array(WorkspaceView) });
/** `GET /workspaces/:id/operations`, newest first. */
export const OperationList = z.object({ operations: z.array(OperationView) });

/** `GET /workspaces/:id/secrets`: the names and when each was last set, never the values. */
export const SecretKeyList = z.object({
  secrets: z.array(z.object({ key: z.string(), updatedAt: z.string() })),
});
/** `GET /workspaces/:id/secrets/values`, for the workspace's own token only. */
export const SecretValues = z.object({ secrets: z.record(z.string(), z.string()) });
/** `PUT` and `DELETE /workspaces/:id/secrets/:key`: a running workspace needs a restart to see the change. */
export const SecretChange = z.object({ key: z.string(), needsRestart: z.boolean() });

/** `GET /health` on both services. */
export const HealthResponse = z.object({ ok: z.literal(true) });

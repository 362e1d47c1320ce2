import { z } from "zod";
import { OperationKind, OperationStatus, WorkspaceStatus } from "./status.ts";

export const TIERS = [2, 3, 4] as const;
export const Tier = z.union([z.literal(2), z.literal(3), z.literal(4)], {
  error: "tier must be 2, 3 or 4",
});
export type Tier = z.infer<typeof Tier>;

/** Secret and metadata keys: what an environment variable name may be. */
export const SECRET_KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
export const SecretKey = z.string().regex(SECRET_KEY_PATTERN, "must look like an environment variable name");
export const SecretValue = z.string().max(64 * 1024);

/** Names a runtime may not override: the platform owns them. */
export const RESERVED_ENV_KEYS = ["WORKSPACE_ID", "PLATFORM_URL", "WORKSPACE_BOOT_TOKEN"] as const;

export const Metadata = z
  .record(z.string().max(64), z.union([z.string().max(1024), z.number(), z.boolean()]))
  .refine((value) => Object.keys(value).length <= 32, "at most 32 metadata keys");

export const CreateWorkspaceBody = z.strictObject({
  name: z.string().trim().min(1).max(100),
  runtime: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, "runtime must be a lower-case image name fragment"),
  tier: Tier.default(2),
  secrets: z
    .record(SecretKey, SecretValue)
    .refine((value) => Object.keys(value).length <= 100, "at most 100 secrets")
    .refine(
      (value) => !Object.keys(value).some((key) => (RESERVED_ENV_KEYS as readonly string[]).includes(key)),
      `secret names ${RESERVED_ENV_KEYS.join(", ")} are reserved`,
    )
    .optional(),
  metadata: Metadata.optional(),
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

export const AcceptedOperation = z.object({ workspace: WorkspaceView, operation: OperationView });
export type AcceptedOperation = z.infer<typeof AcceptedOperation>;

export const PutSecretBody = z.strictObject({ value: SecretValue });

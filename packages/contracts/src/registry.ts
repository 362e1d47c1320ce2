import { z } from "zod";
import { WorkspaceId } from "./ids.ts";
import { WorkspaceStatus } from "./status.ts";
import { multiLineText, singleLineText, storableJson } from "./text.ts";

/** The agent's own JSON, stored as sent: any fields beyond these, with nothing in them the database refuses. */
export const AgentCard = storableJson(
  z
    .object({
      name: singleLineText().max(200).optional(),
      description: multiLineText().max(2000).optional(),
      version: singleLineText().max(100).optional(),
      skills: z.array(z.unknown()).max(100).optional(),
    })
    .passthrough(),
);
export type AgentCard = z.infer<typeof AgentCard>;

export const RegisterBody = z.object({
  id: WorkspaceId,
  url: singleLineText().url().max(2048).nullable().optional(),
  agent_card: AgentCard.optional(),
});
export type RegisterBody = z.infer<typeof RegisterBody>;

/** `heartbeat_interval_seconds`: heartbeat at least this often (a third of `HEARTBEAT_STALE_AFTER`, 1–30 s). */
export const RegisterResponse = z.object({
  /** The workspace's bearer token (heartbeats, secrets, A2A calls it makes). */
  auth_token: z.string(),
  workspace_id: z.string(),
  heartbeat_interval_seconds: z.number().int().positive(),
  /**
   * What the platform's A2A proxy sends the agent in `x-molecule-inbound-token` (see `inbound.ts`); the agent refuses
   * JSON-RPC requests without it. Replaced at every registration, like the bearer token.
   */
  inbound_token: z.string(),
  /**
   * The workspace's status once registered. A registration with the boot token whose answer carries `secrets` counts
   * as the agent's first heartbeat: it moves the workspace `online` where a heartbeat would.
   */
  status: WorkspaceStatus,
  /**
   * The workspace's secret values, only in the answer to a registration with the boot token (never the admin's), and
   * only when every one of them could be opened; without it the agent pulls them with
   * `GET /workspaces/:id/secrets/values`, which says what is wrong.
   */
  secrets: z.record(z.string(), z.string()).optional(),
});
export type RegisterResponse = z.infer<typeof RegisterResponse>;

/** Agents may send extra fields (load, version, …); they are accepted and ignored beyond these. */
export const HeartbeatBody = z
  .object({
    workspace_id: WorkspaceId,
    status: z.enum(["ok", "degraded"]).optional(),
    detail: multiLineText().max(1000).optional(),
    /**
     * The agent did something since its last heartbeat (or is still at it) without an A2A message through the
     * platform: work on a task, a scheduled job. It keeps the workspace from being suspended as idle.
     */
    active: z.boolean().optional(),
  })
  .passthrough();
export type HeartbeatBody = z.infer<typeof HeartbeatBody>;

export const HeartbeatResponse = z.object({
  ok: z.literal(true),
  status: z.string(),
  heartbeat_interval_seconds: z.number().int().positive(),
});
export type HeartbeatResponse = z.infer<typeof HeartbeatResponse>;

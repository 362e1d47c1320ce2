import { z } from "zod";

export const AgentCard = z
  .object({
    name: z.string().max(200).optional(),
    description: z.string().max(2000).optional(),
    version: z.string().max(100).optional(),
    skills: z.array(z.unknown()).max(100).optional(),
  })
  .passthrough();

export const RegisterBody = z.object({
  id: z.string().min(1).max(64),
  url: z.string().url().max(2048).nullable().optional(),
  agent_card: AgentCard.optional(),
});
export type RegisterBody = z.infer<typeof RegisterBody>;

export const RegisterResponse = z.object({ auth_token: z.string(), workspace_id: z.string() });
export type RegisterResponse = z.infer<typeof RegisterResponse>;

/** Agents may send extra fields (load, version, …); they are accepted and ignored beyond these. */
export const HeartbeatBody = z
  .object({
    workspace_id: z.string().min(1).max(64),
    status: z.enum(["ok", "degraded"]).optional(),
    detail: z.string().max(1000).optional(),
  })
  .passthrough();
export type HeartbeatBody = z.infer<typeof HeartbeatBody>;

export const HeartbeatResponse = z.object({ ok: z.literal(true), status: z.string() });

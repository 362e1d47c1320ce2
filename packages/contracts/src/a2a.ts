import { z } from "zod";

/** JSON-RPC methods the A2A proxy forwards; anything else is refused with 400 before it reaches the target. */
export const A2A_METHODS = ["message/send", "message/stream", "tasks/get", "tasks/cancel"] as const;
export type A2AMethod = (typeof A2A_METHODS)[number];

/** Methods whose answer is a server-sent event stream, passed through unbuffered. */
export const A2A_STREAMING_METHODS: readonly A2AMethod[] = ["message/stream"];

/** The JSON-RPC 2.0 envelope the proxy checks; params are the target's business and are forwarded untouched. */
export const A2ARequest = z
  .object({
    jsonrpc: z.literal("2.0"),
    id: z.union([z.string().min(1).max(200), z.number().int()]),
    method: z.enum(A2A_METHODS),
    params: z.unknown().optional(),
  })
  .passthrough();
export type A2ARequest = z.infer<typeof A2ARequest>;

/** `GET /registry/discover/:id`: what an authorised caller may know about a target. */
export const DiscoverResponse = z.object({
  workspace_id: z.string(),
  name: z.string(),
  status: z.string(),
  /** True when the target's status and registered URL let it receive A2A messages now. */
  reachable: z.boolean(),
  agent_card: z.record(z.string(), z.unknown()).nullable(),
});
export type DiscoverResponse = z.infer<typeof DiscoverResponse>;

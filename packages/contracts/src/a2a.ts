import { z } from "zod";

/**
 * The JSON-RPC 2.0 request object the proxy checks before forwarding: any method (the target's business, A2A 0.3 or
 * 1.0 names alike); params are forwarded untouched.
 */
export const A2ARequest = z
  .object({
    jsonrpc: z.literal("2.0"),
    id: z.union([z.string().max(200), z.number().int(), z.null()]).optional(),
    method: z.string().min(1).max(200),
    params: z.unknown().optional(),
  })
  .passthrough();
export type A2ARequest = z.infer<typeof A2ARequest>;

/** The request header naming the A2A protocol version a client speaks; the only caller header the proxy forwards. */
export const A2A_VERSION_HEADER = "a2a-version";

/**
 * The JSON-RPC `error.code` of each error the proxy raises itself (its stable name is in `error.data.code`). Framing
 * uses JSON-RPC's own codes; the rest are implementation-defined server errors, clear of A2A's -32001..-32009.
 */
export const A2A_PROXY_ERROR_CODES = {
  parse_error: -32700,
  invalid_request: -32600,
  internal: -32603,
  unauthorized: -32040,
  forbidden: -32041,
  not_found: -32042,
  payload_too_large: -32043,
  rate_limited: -32044,
  upstream_unavailable: -32050,
  secrets_key_unavailable: -32050,
  bad_gateway: -32051,
  gateway_timeout: -32052,
  wake_timeout: -32053,
} as const;

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

/**
 * What the proxy answers for an error it raised itself: a JSON-RPC error object answering the request's id (null
 * when none could be read), with the service's stable error code and the request id in `error.data`.
 */
export const A2AProxyError = z.object({
  jsonrpc: z.literal("2.0"),
  id: z.union([z.string(), z.number(), z.null()]),
  error: z.object({
    code: z.number().int(),
    message: z.string(),
    data: z.object({ code: z.string(), request_id: z.string(), details: z.unknown().optional() }),
  }),
});
export type A2AProxyError = z.infer<typeof A2AProxyError>;

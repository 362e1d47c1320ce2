/**
 * How the platform proves to an agent that an A2A request comes through its proxy (which has checked that the caller
 * may talk to the agent). The agent learns its inbound token from its register answer (`RegisterResponse.inbound_token`)
 * and refuses JSON-RPC requests that do not carry it in `INBOUND_TOKEN_HEADER`. The proxy always sets the header
 * itself and never passes on a caller's value of it.
 *
 * No zod here: the agent SDK, bundled into the workspace image, imports this module alone.
 */

/** The header the proxy puts the target's inbound token in. */
export const INBOUND_TOKEN_HEADER = "x-molecule-inbound-token";

/**
 * The header naming who called through the proxy: "admin" or the calling workspace's id. An agent can rely on it only
 * on a request that also carries its inbound token.
 */
export const CALLER_HEADER = "x-molecule-caller";

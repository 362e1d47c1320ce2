import type { Handle } from "./provisioner.ts";

/** The port the reference workspace image listens on unless the spec sets AGENT_PORT. */
export const DEFAULT_AGENT_PORT = 8000;

/**
 * The port a workspace's agent listens on: the spec's `AGENT_PORT`, or {@link DEFAULT_AGENT_PORT} when it sets none.
 * Undefined when the spec leaves the port to the agent (`AGENT_PORT=0`, any free port) or sets something that is
 * not a port: no fixed address can then be assigned.
 */
export function fixedAgentPort(env: Readonly<Record<string, string>>): number | undefined {
  const port = Number(env.AGENT_PORT ?? DEFAULT_AGENT_PORT);
  return Number.isInteger(port) && port > 0 && port <= 65_535 ? port : undefined;
}

/** The address a backend assigned to the workspace's agent (`handle.agentUrl`), or null when it assigned none. */
export function handleAgentUrl(handle: Handle | null | undefined): string | null {
  const value = handle?.agentUrl;
  return typeof value === "string" && value !== "" ? value : null;
}

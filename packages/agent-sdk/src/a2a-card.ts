/**
 * The agent card in the shape each protocol version reads, and the version a request asks for. As the official SDK
 * does, the card answers the `A2A-Version` header (0.3 when absent): a 0.3 card carries `protocolVersion`, `url`,
 * `preferredTransport: "JSONRPC"` and `additionalInterfaces`, and also 1.0's `supportedInterfaces` (so a 1.0 client
 * reading it keeps to 1.0); a 1.0 card carries `supportedInterfaces` only. Both list the one JSON-RPC endpoint twice,
 * once per version.
 */
import { asRecord } from "./a2a-protocol.ts";
import type { AgentCard } from "./client.ts";

export const A2A_VERSION_HEADER = "a2a-version";
export type ProtocolVersion = "0.3" | "1.0";
export const PROTOCOL_VERSIONS: readonly ProtocolVersion[] = ["1.0", "0.3"];

/**
 * The version a request asks for in its `A2A-Version` header (major.minor; a patch is ignored), 0.3 when it sends
 * none; null when it asks for one this server does not speak.
 */
export function requestedVersion(header: string | string[] | undefined): ProtocolVersion | null {
  const value = (Array.isArray(header) ? header[0] : header)?.trim();
  if (!value) return "0.3";
  const match = /^(\d+)\.(\d+)(?:\.\d+)?$/.exec(value);
  const version = match ? `${Number(match[1])}.${Number(match[2])}` : value;
  return (PROTOCOL_VERSIONS as readonly string[]).includes(version) ? (version as ProtocolVersion) : null;
}

/** Fields only a 0.3 card has. */
const V03_ONLY = ["url", "preferredTransport", "additionalInterfaces", "protocolVersion"];

/** `card` as `version` reads it, served at `url` (the card's own `url` when it has one). */
export function cardFor(card: AgentCard, url: string, version: ProtocolVersion): Record<string, unknown> {
  const endpoint = typeof card.url === "string" && card.url !== "" ? card.url : url;
  const capabilities = asRecord(card.capabilities) ?? {};
  const common: Record<string, unknown> = {
    ...card,
    name: card.name ?? "agent",
    description: card.description ?? "",
    version: card.version ?? "0.0.0",
    supportedInterfaces: PROTOCOL_VERSIONS.map((protocolVersion) => ({
      url: endpoint,
      protocolBinding: "JSONRPC",
      protocolVersion,
    })),
    // This server streams and resubscribes; it sends no push notifications.
    capabilities: { ...capabilities, streaming: true, pushNotifications: false },
    defaultInputModes: card.defaultInputModes ?? ["text/plain"],
    defaultOutputModes: card.defaultOutputModes ?? ["text/plain"],
    skills: (card.skills ?? []).map(completeSkill),
  };
  if (version === "1.0") {
    for (const field of V03_ONLY) delete common[field];
    return common;
  }
  return {
    ...common,
    protocolVersion: "0.3.0",
    url: endpoint,
    preferredTransport: "JSONRPC",
    additionalInterfaces: [{ url: endpoint, transport: "JSONRPC" }],
  };
}

/** A skill with the fields both versions require (`id`, `name`, `description`, `tags`). */
function completeSkill(skill: unknown): unknown {
  const s = asRecord(skill);
  if (!s) return skill;
  const id = typeof s.id === "string" ? s.id : String(s.name ?? "skill");
  return { ...s, id, name: s.name ?? id, description: s.description ?? "", tags: s.tags ?? [] };
}

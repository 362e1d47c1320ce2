import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { isIP, type LookupFunction } from "node:net";
import { DomainError, EXTERNAL_RUNTIME } from "@molecule/contracts";
import type { WorkspaceRow } from "@molecule/db";
import { handleAgentUrl } from "@molecule/provisioner-core";
import { Agent } from "undici";

/** What the operator allows for registered agent URLs (`ALLOW_INSECURE_AGENT_URLS`, `ALLOW_PRIVATE_AGENT_URLS`). */
export interface AgentUrlPolicy {
  /** Plain `http://`, for loopback hosts (and private addresses when `allowPrivate` is also set). */
  allowInsecure: boolean;
  /** Loopback, private, link-local, cloud-metadata and other non-public addresses. */
  allowPrivate: boolean;
}

export const PRIVATE_ADDRESS_MESSAGE = "agent URL resolves to a private address";

/** Host names that are never public, whatever DNS says. */
const PRIVATE_NAMES = new Set(["localhost", "metadata", "metadata.google.internal", "instance-data"]);

/** Blocked IPv4 ranges: [first octets as a number, prefix length]. */
const V4_BLOCKED: ReadonlyArray<readonly [string, number]> = [
  ["0.0.0.0", 8], // "this" network
  ["10.0.0.0", 8], // private
  ["100.64.0.0", 10], // carrier-grade NAT
  ["127.0.0.0", 8], // loopback
  ["169.254.0.0", 16], // link-local, incl. 169.254.169.254 (cloud metadata)
  ["172.16.0.0", 12], // private
  ["192.0.0.0", 24], // IETF protocol assignments
  ["192.0.2.0", 24], // documentation
  ["192.168.0.0", 16], // private
  ["198.18.0.0", 15], // benchmarking
  ["198.51.100.0", 24], // documentation
  ["203.0.113.0", 24], // documentation
  ["224.0.0.0", 4], // multicast
  ["240.0.0.0", 4], // reserved, incl. broadcast
];

function v4ToNumber(address: string): number {
  return address.split(".").reduce((acc, part) => acc * 256 + Number(part), 0);
}

function v4Blocked(value: number): boolean {
  return V4_BLOCKED.some(([base, bits]) => {
    const size = 2 ** (32 - bits);
    const start = v4ToNumber(base);
    return value >= start && value < start + size;
  });
}

/** Eight 16-bit groups of an IPv6 address (dotted IPv4 tails included), or null when it does not parse. */
function v6Groups(address: string): number[] | null {
  let text = address.toLowerCase().split("%")[0] ?? "";
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted?.[1]) {
    const n = v4ToNumber(dotted[1]);
    text = `${text.slice(0, -dotted[1].length)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const [head, tail] = text.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const missing = 8 - left.length - right.length;
  if (text.includes("::") ? missing < 0 : missing !== 0) return null;
  const groups = [...left, ...Array(text.includes("::") ? missing : 0).fill("0"), ...right].map((g) =>
    Number.parseInt(g, 16),
  );
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff)
    ? groups
    : null;
}

/** True when an IP address (v4 or v6) is loopback, private, link-local, metadata or otherwise not public. */
export function isBlockedAddress(address: string): boolean {
  const kind = isIP(address);
  if (kind === 4) return v4Blocked(v4ToNumber(address));
  if (kind !== 6) return true; // not an address at all: refuse
  const g = v6Groups(address);
  if (!g) return true;
  const [a = 0, b = 0, c = 0, d = 0, e = 0, f = 0, h = 0, i = 0] = g;
  const embedded = (h * 65536 + i) >>> 0;
  // ::/128 unspecified, ::1 loopback, ::a.b.c.d (IPv4-compatible)
  if (a === 0 && b === 0 && c === 0 && d === 0 && e === 0 && f === 0) return h === 0 || v4Blocked(embedded);
  // ::ffff:a.b.c.d (IPv4-mapped)
  if (a === 0 && b === 0 && c === 0 && d === 0 && e === 0 && f === 0xffff) return v4Blocked(embedded);
  // 64:ff9b::a.b.c.d (NAT64)
  if (a === 0x64 && b === 0xff9b && c === 0 && d === 0 && e === 0 && f === 0) return v4Blocked(embedded);
  if ((a & 0xfe00) === 0xfc00) return true; // fc00::/7 unique local
  if ((a & 0xffc0) === 0xfe80) return true; // fe80::/10 link-local
  if ((a & 0xffc0) === 0xfec0) return true; // fec0::/10 site-local (deprecated)
  if ((a & 0xff00) === 0xff00) return true; // ff00::/8 multicast
  if (a === 0x2001 && b === 0x0db8) return true; // documentation
  if (a === 0x2002) return v4Blocked(((b * 65536 + c) >>> 0) as number); // 6to4 embeds an IPv4 address
  return false;
}

function isLoopbackAddress(address: string): boolean {
  const kind = isIP(address);
  if (kind === 4) return address.startsWith("127.");
  if (kind !== 6) return false;
  const g = v6Groups(address);
  if (!g) return false;
  const prefixZero = g.slice(0, 5).every((x) => x === 0);
  if (prefixZero && g[5] === 0 && g[6] === 0 && g[7] === 1) return true;
  return prefixZero && g[5] === 0xffff && (g[6] ?? 0) >> 8 === 127;
}

function bareHost(hostname: string): string {
  const host = hostname.toLowerCase().replace(/\.$/, "");
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/** True for names and literals that are loopback by definition (no DNS asked). */
export function isLoopbackHost(hostname: string): boolean {
  const host = bareHost(hostname);
  return host === "localhost" || host.endsWith(".localhost") || isLoopbackAddress(host);
}

/** True when the host string itself is non-public: a blocked IP literal or a reserved name. */
export function isPrivateHost(hostname: string): boolean {
  const host = bareHost(hostname);
  if (isIP(host)) return isBlockedAddress(host);
  return PRIVATE_NAMES.has(host) || host.endsWith(".localhost") || host.endsWith(".internal");
}

/**
 * Register-time check of the URL string: scheme rules and blocked IP literals / reserved names. Names that merely
 * resolve to a blocked address are caught at connect time by {@link createAgentDispatcher}.
 * Returns null when acceptable, else the reason.
 */
export function checkAgentUrl(url: string, policy: AgentUrlPolicy): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return "agent URL is not a valid URL";
  }
  if (parsed.username || parsed.password) return "agent URL must not carry credentials";
  const privateHost = isPrivateHost(parsed.hostname);
  if (parsed.protocol === "http:") {
    const loopback = isLoopbackHost(parsed.hostname);
    const allowed = policy.allowInsecure && (loopback || (policy.allowPrivate && privateHost));
    if (!allowed) {
      return policy.allowInsecure
        ? "agent URL must use https://; plain http:// is accepted only for loopback hosts"
        : "agent URL must use https:// (plain http:// for loopback needs ALLOW_INSECURE_AGENT_URLS=true)";
    }
  } else if (parsed.protocol !== "https:") {
    return `agent URL must use https://, not ${parsed.protocol}//`;
  }
  if (privateHost && !policy.allowPrivate) {
    return "agent URL points at a private, loopback, link-local or metadata address (ALLOW_PRIVATE_AGENT_URLS=false)";
  }
  return null;
}

/**
 * True when `url` is exactly the address the workspace's backend assigned its agent (the handle's `agentUrl`: Fly's
 * `<machine id>.vm.<app>.internal`, the container's name on a Docker network, an EC2 private address). Such a URL
 * may be registered and reached whatever the policy says about private addresses: the platform's own backend chose
 * it for this workspace and nobody else. External workspaces have none; any other URL stays under the policy.
 */
export function isAssignedAgentUrl(
  workspace: Pick<WorkspaceRow, "runtime" | "handle">,
  url: string,
): boolean {
  if (workspace.runtime === EXTERNAL_RUNTIME) return false;
  const assigned = handleAgentUrl(workspace.handle);
  if (!assigned || !URL.canParse(url) || !URL.canParse(assigned)) return false;
  return new URL(url).href === new URL(assigned).href;
}

/** Throws a 400 `bad_request` when the URL breaks the policy. */
export function assertAgentUrl(url: string, policy: AgentUrlPolicy): void {
  const reason = checkAgentUrl(url, policy);
  if (reason) throw new DomainError("bad_request", reason, { field: "url" });
}

/** The error a refused connect carries, so the proxy can tell it from an ordinary network failure. */
export class PrivateAddressError extends Error {
  readonly code = "ERR_AGENT_URL_PRIVATE";
  constructor(
    readonly hostname: string,
    readonly address: string,
  ) {
    super(`${PRIVATE_ADDRESS_MESSAGE} (${hostname} → ${address})`);
    this.name = "PrivateAddressError";
  }
}

/** True when `err` (or any error in its `cause` chain) is a refused private-address connect. */
export function isPrivateAddressError(err: unknown): boolean {
  let current: unknown = err;
  for (let depth = 0; current && depth < 8; depth++) {
    if (current instanceof PrivateAddressError) return true;
    if ((current as { code?: unknown }).code === "ERR_AGENT_URL_PRIVATE") return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

export type Resolver = (hostname: string) => Promise<LookupAddress[]>;

const systemResolver: Resolver = (hostname) =>
  new Promise((resolve, reject) =>
    dnsLookup(hostname, { all: true }, (err, addresses) => (err ? reject(err) : resolve(addresses))),
  );

/**
 * A `net.connect` lookup that resolves the host itself and refuses blocked addresses unless the policy allows
 * private networks. It runs for every connection, on the address actually dialled, so a DNS answer that changes
 * after registration (rebinding) cannot reach a private address.
 */
export function guardedLookup(policy: AgentUrlPolicy, resolver: Resolver = systemResolver): LookupFunction {
  return ((hostname: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    const host = bareHost(hostname);
    const answer: Promise<LookupAddress[]> = isIP(host)
      ? Promise.resolve([{ address: host, family: isIP(host) }])
      : resolver(host);
    answer.then(
      (addresses) => {
        if (addresses.length === 0) {
          callback(Object.assign(new Error(`no address for ${host}`), { code: "ENOTFOUND" }));
          return;
        }
        if (!policy.allowPrivate) {
          const blocked = addresses.find((a) => isBlockedAddress(a.address));
          if (blocked) {
            callback(new PrivateAddressError(host, blocked.address));
            return;
          }
        }
        if (options?.all) callback(null, addresses);
        else callback(null, addresses[0]?.address, addresses[0]?.family);
      },
      (err: unknown) => callback(err),
    );
  }) as unknown as LookupFunction;
}

/** The undici dispatcher for the A2A proxy's fetch: every connect goes through {@link guardedLookup}. */
export function createAgentDispatcher(policy: AgentUrlPolicy, resolver?: Resolver): Agent {
  return new Agent({ connect: { lookup: guardedLookup(policy, resolver) } });
}

import { randomBytes } from "node:crypto";
import { z } from "zod";

/**
 * Prefixed, time-sortable ids: `ws_`, `op_`, `org_`, `rcn_` (a reconcile pass) followed by 10 chars of time and 16 of randomness, all lower-case
 * letters and digits. Every id a client may send is checked against its schema here (`WorkspaceId`, `OperationId`,
 * `OrgId`) where it enters a service, and again at the provisioner boundary before a resource name or an engine or
 * cloud path is built from it.
 */
export const ID_PREFIXES = ["ws", "op", "org", "evt", "req", "rcn"] as const;
export type IdPrefix = (typeof ID_PREFIXES)[number];

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford base32, lower case

function encodeTime(ms: number): string {
  let out = "";
  let rest = ms;
  for (let i = 0; i < 10; i++) {
    out = (ALPHABET[rest % 32] ?? "0") + out;
    rest = Math.floor(rest / 32);
  }
  return out;
}

function encodeRandom(length: number): string {
  const bytes = randomBytes(length);
  let out = "";
  for (const byte of bytes) out += ALPHABET[byte % 32];
  return out;
}

export interface IdGenerator {
  next(prefix: IdPrefix): string;
}

export function createIdGenerator(now: () => number = Date.now): IdGenerator {
  return { next: (prefix) => `${prefix}_${encodeTime(now())}${encodeRandom(16)}` };
}

/** Any id: a known prefix's shape. What follows the prefix is 26 lower-case letters and digits, nothing else. */
export const ID_PATTERN = /^[a-z]{2,3}_[0-9a-z]{26}$/;

const PATTERNS = Object.fromEntries(
  ID_PREFIXES.map((prefix) => [prefix, new RegExp(`^${prefix}_[0-9a-z]{26}$`)]),
) as Record<IdPrefix, RegExp>;

export function isId(prefix: IdPrefix, value: unknown): boolean {
  return typeof value === "string" && PATTERNS[prefix].test(value);
}

/** What an id of `prefix` looks like, for error messages (which never repeat the refused value). */
export function idShape(prefix: IdPrefix): string {
  return `${prefix}_ followed by 26 lower-case letters and digits`;
}

/** The schema of an id of `prefix`; the wire type stays a plain string. */
export function idSchema(prefix: IdPrefix) {
  return z.string().regex(PATTERNS[prefix], `expected ${idShape(prefix)}`);
}

export const WorkspaceId = idSchema("ws");
export const OperationId = idSchema("op");
export const OrgId = idSchema("org");

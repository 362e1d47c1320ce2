import { randomBytes } from "node:crypto";

/** Prefixed, time-sortable ids: `ws_`, `op_`, `org_` followed by 10 chars of time and 16 of randomness. */
export type IdPrefix = "ws" | "op" | "org" | "evt" | "req";

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

export const ID_PATTERN = /^[a-z]{2,3}_[0-9a-z]{26}$/;

export function isId(prefix: IdPrefix, value: string): boolean {
  return value.startsWith(`${prefix}_`) && ID_PATTERN.test(value);
}

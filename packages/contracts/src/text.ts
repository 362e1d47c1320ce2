import { z } from "zod";

/**
 * What text the platform accepts where it stores it. PostgreSQL refuses U+0000 in `text` and `jsonb` and a lone
 * UTF-16 surrogate in `jsonb`, so such a string must be refused with a 400 where it enters, never reach a query.
 * Control characters in a one-line field (a name, a key, a URL) are never meant and break log lines, terminals and
 * the canvas. Hence three rules:
 *
 * - single-line text (names, keys, versions, URLs): no C0 control character (U+0000–U+001F), no DEL, no lone
 *   surrogate;
 * - multi-line text (details, descriptions, metadata values): tab, line feed and carriage return allowed, every other
 *   C0 control character, DEL and lone surrogates refused;
 * - arbitrary JSON (agent cards, metadata handed to a backend): no NUL and no lone surrogate in any string or key, at
 *   any depth; other control characters are the JSON's own business.
 */

export const SINGLE_LINE_MESSAGE = "must not contain control characters (one line of text)";
export const MULTI_LINE_MESSAGE = "must not contain control characters other than tab and line breaks";
export const STORABLE_MESSAGE =
  "must not contain NUL (U+0000) or unpaired surrogates, nor nest deeper than 64 levels";

/** Deeper JSON than this is refused (and never walked further). */
export const MAX_JSON_DEPTH = 64;

const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const DEL = 0x7f;

/**
 * Walks the UTF-16 code units once: false at the first control character `allowed` does not accept, or at a
 * surrogate that is not half of a pair.
 */
function clean(value: string, allowed: (code: number) => boolean): boolean {
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code < 0x20 || code === DEL) {
      if (!allowed(code)) return false;
    } else if (code >= 0xd800 && code <= 0xdbff) {
      const next = value.charCodeAt(i + 1);
      if (!(next >= 0xdc00 && next <= 0xdfff)) return false;
      i++;
    } else if (code >= 0xdc00 && code <= 0xdfff) {
      return false;
    }
  }
  return true;
}

const none = () => false;
const lineBreaksAndTab = (code: number) => code === TAB || code === LF || code === CR;
const allButNul = (code: number) => code !== 0;

export function isSingleLineText(value: string): boolean {
  return clean(value, none);
}

export function isMultiLineText(value: string): boolean {
  return clean(value, lineBreaksAndTab);
}

/** True when every string and key in a JSON value can be stored (no NUL, no lone surrogate) and it is not too deep. */
/** What a process environment can carry unchanged: any text but NUL and unpaired surrogates (UTF-8 has no bytes
 * for those: they would arrive as U+FFFD, a different value than the one stored). */
export function isEnvText(value: string): boolean {
  return clean(value, allButNul);
}

export function isStorableJson(value: unknown, depth = 0): boolean {
  if (typeof value === "string") return clean(value, allButNul);
  if (value === null || typeof value !== "object") return true;
  if (depth >= MAX_JSON_DEPTH) return false;
  if (Array.isArray(value)) return value.every((item) => isStorableJson(item, depth + 1));
  return Object.entries(value).every(
    ([key, item]) => clean(key, allButNul) && isStorableJson(item, depth + 1),
  );
}

/** A one-line string: a name, a key, a version, a URL. Chain length and format checks after it. */
export function singleLineText() {
  return z.string().refine(isSingleLineText, SINGLE_LINE_MESSAGE);
}

/** Text that may span lines: a detail, a description. Chain length checks after it. */
export function multiLineText() {
  return z.string().refine(isMultiLineText, MULTI_LINE_MESSAGE);
}

/** Refines an arbitrary-JSON schema so that nothing in it is refused by the database. */
export function storableJson<T extends z.ZodType>(schema: T) {
  return schema.refine(isStorableJson, STORABLE_MESSAGE);
}

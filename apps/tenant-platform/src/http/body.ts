import { DomainError } from "@molecule/contracts";
import { isJsonType, parseWith } from "@molecule/service-kit/http";
import type { Context } from "hono";
import type { z } from "zod";

export { parseWith };

/**
 * True for the types a body is read as JSON under: JSON itself, and curl's default form type (`curl -d '{…}'` sends
 * `application/x-www-form-urlencoded`). A body without a Content-Type is read as JSON too.
 */
function readAsJson(type: string): boolean {
  return isJsonType(type) || /^application\/x-www-form-urlencoded\b/i.test(type);
}

/**
 * The JSON value of a body's text, as every route that takes JSON reads it: any type other than JSON or curl's
 * default is 415; text that is not JSON is 400; an empty body is `{}`. With `text` null, only the type is checked.
 */
export function parseJsonText(type: string | undefined, text: string | null): unknown {
  if (type && !readAsJson(type)) {
    throw new DomainError("unsupported_media_type", `expected an application/json body, got ${type}`);
  }
  if (text === null) return undefined;
  try {
    return text === "" ? {} : JSON.parse(text);
  } catch {
    throw new DomainError("bad_request", "body is not valid JSON");
  }
}

/**
 * The body's text and its JSON value ({@link parseJsonText}), for every route that takes JSON (the A2A proxy forwards
 * the text as it came).
 */
export async function readJsonText(c: Context): Promise<{ text: string; value: unknown }> {
  const type = c.req.header("content-type");
  parseJsonText(type, null);
  const text = await c.req.text();
  return { text, value: parseJsonText(type, text) };
}

/** Reads a JSON body (as `readJsonText` does) and validates it. */
export async function readJson<T extends z.ZodType>(c: Context, schema: T): Promise<z.infer<T>> {
  return parseWith(schema, (await readJsonText(c)).value, "body");
}

import { DomainError } from "@molecule/contracts";
import { isJsonType, parseWith } from "@molecule/service-kit/http";
import type { Context } from "hono";
import type { z } from "zod";

export { parseWith };

/**
 * Reads a JSON body and validates it. A body without a Content-Type is read as JSON (curl one-liners send
 * none); any other non-JSON type is refused.
 */
export async function readJson<T extends z.ZodType>(c: Context, schema: T): Promise<z.infer<T>> {
  const type = c.req.header("content-type");
  if (type && !isJsonType(type) && !/^application\/x-www-form-urlencoded\b/i.test(type)) {
    throw new DomainError("unsupported_media_type", `expected an application/json body, got ${type}`);
  }
  const text = await c.req.text();
  let value: unknown;
  try {
    value = text === "" ? {} : JSON.parse(text);
  } catch {
    throw new DomainError("bad_request", "body is not valid JSON");
  }
  return parseWith(schema, value, "body");
}

import { DomainError } from "@molecule/contracts";
import { isJsonType, parseWith } from "@molecule/service-kit/http";
import type { Context } from "hono";
import type { z } from "zod";

/** Parses and validates JSON from bytes already read (the signed body); an empty body is `{}`. */
export function parseJsonBytes<T extends z.ZodType>(bytes: Uint8Array, schema: T): z.infer<T> {
  const text = new TextDecoder().decode(bytes);
  let value: unknown;
  try {
    value = text.trim() === "" ? {} : JSON.parse(text);
  } catch {
    throw new DomainError("bad_request", "body is not valid JSON");
  }
  return parseWith(schema, value, "body");
}

/** Reads the body once as bytes, refusing a non-JSON content type. */
export async function readBytes(c: Context): Promise<Uint8Array> {
  const type = c.req.header("content-type");
  if (type && !isJsonType(type)) {
    throw new DomainError("unsupported_media_type", `expected an application/json body, got ${type}`);
  }
  return new Uint8Array(await c.req.arrayBuffer());
}

/** The Idempotency-Key header: required on every mutating tenant call, optional for admin calls. */
export function idempotencyKey(c: Context, required: boolean): string | null {
  const key = c.req.header("idempotency-key")?.trim();
  if (!key) {
    if (required) throw new DomainError("bad_request", "an Idempotency-Key header is required");
    return null;
  }
  if (key.length > 200) throw new DomainError("bad_request", "Idempotency-Key is longer than 200 characters");
  return key;
}

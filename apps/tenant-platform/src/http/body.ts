import { DomainError } from "@molecule/contracts";
import type { Context } from "hono";
import type { z } from "zod";

/**
 * Reads a JSON body and validates it. A body without a Content-Type is read as JSON (curl one-liners send
 * none); any other non-JSON type is refused.
 */
export async function readJson<T extends z.ZodType>(c: Context, schema: T): Promise<z.infer<T>> {
  const type = c.req.header("content-type");
  if (
    type &&
    !/^application\/(.+\+)?json\b/i.test(type) &&
    !/^application\/x-www-form-urlencoded\b/i.test(type)
  ) {
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

export function parseWith<T extends z.ZodType>(schema: T, value: unknown, where: string): z.infer<T> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((issue) => ({
    path: issue.path.join("."),
    message: issue.message,
  }));
  const first = issues[0];
  throw new DomainError(
    "bad_request",
    `invalid ${where}: ${first?.path ? `${first.path}: ` : ""}${first?.message ?? "invalid"}`,
    { issues },
  );
}

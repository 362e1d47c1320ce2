import { DomainError } from "@molecule/contracts";
import type { z } from "zod";

/** `application/json` and every `application/*+json` type. */
export function isJsonType(contentType: string): boolean {
  return /^application\/(.+\+)?json\b/i.test(contentType);
}

/** Validates a parsed value; a mismatch is `bad_request` naming the first issue's path, with every issue in details. */
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

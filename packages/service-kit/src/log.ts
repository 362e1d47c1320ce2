/**
 * What an error looks like in a log line. A database error carries the statement and its parameters (drizzle puts
 * both in its message, the drivers keep them as properties), and the parameters are request data: names, metadata,
 * tokens' hashes, sealed secrets. So a database error is logged as its SQLSTATE code, its constraint when there is
 * one, a generic message and its stack frames, never as its message or properties. Both services' loggers use
 * `logSerializers`, and the HTTP error handler logs through `loggableError`, so no call site has to remember.
 */
import { stdSerializers } from "pino";

const SQLSTATE = /^[0-9A-Z]{5}$/;

interface DatabaseErrorFacts {
  code: string | null;
  constraint: string | null;
}

function isDatabaseLink(link: Record<string, unknown>): boolean {
  const name = link.constructor?.name;
  return (
    name === "DrizzleQueryError" ||
    name === "PostgresError" ||
    name === "DatabaseError" ||
    ("query" in link && ("params" in link || "parameters" in link)) ||
    (typeof link.code === "string" && SQLSTATE.test(link.code) && "severity" in link)
  );
}

/** The facts of a database error anywhere in `error`'s cause chain, or null when it is not one. */
export function databaseErrorFacts(error: unknown): DatabaseErrorFacts | null {
  let found = false;
  let code: string | null = null;
  let constraint: string | null = null;
  const seen = new Set<unknown>();
  for (let link: unknown = error; link && typeof link === "object" && !seen.has(link); ) {
    seen.add(link);
    const record = link as Record<string, unknown>;
    if (isDatabaseLink(record)) found = true;
    if (code === null && typeof record.code === "string" && SQLSTATE.test(record.code)) code = record.code;
    const name = record.constraint_name ?? record.constraint;
    if (constraint === null && typeof name === "string") constraint = name;
    link = record.cause;
  }
  return found ? { code, constraint } : null;
}

/** Stands in for a database error in logs: the code, the constraint and where it was thrown, nothing of the query. */
export class LoggedDatabaseError extends Error {
  readonly code: string | null;
  readonly constraint?: string;

  constructor(facts: DatabaseErrorFacts, stack: string | undefined) {
    super(`database query failed${facts.code ? ` (SQLSTATE ${facts.code})` : ""}`);
    this.name = "DatabaseError";
    this.code = facts.code;
    if (facts.constraint) this.constraint = facts.constraint;
    // The first lines of a stack repeat the message (drizzle's holds the statement and its parameters): frames only.
    const frames = (stack ?? "").split("\n").filter((line) => /^\s+at /.test(line));
    this.stack = [`${this.name}: ${this.message}`, ...frames].join("\n");
  }
}

/** `error` itself, or a database error's safe stand-in. */
export function loggableError(error: unknown): unknown {
  const facts = databaseErrorFacts(error);
  if (!facts) return error;
  return new LoggedDatabaseError(facts, error instanceof Error ? error.stack : undefined);
}

/** pino `serializers` for both services: `err` goes through `loggableError`, then pino's standard serializer. */
export const logSerializers = {
  err: (error: unknown) => stdSerializers.err(loggableError(error) as Error),
};

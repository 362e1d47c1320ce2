import { randomBytes } from "node:crypto";
import type { IncomingMessage } from "node:http";

/** An answer in Fly's error envelope (`{error, status?}`), thrown anywhere while a request is handled. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly flyStatus?: "unknown" | "insufficient_capacity",
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export interface HandlerContext {
  params: string[];
  query: URLSearchParams;
  headers: IncomingMessage["headers"];
  body: unknown;
}

export function hex(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}

export function ulid(): string {
  const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  let out = "";
  for (const b of randomBytes(26)) out += alphabet[b % 32];
  return out;
}

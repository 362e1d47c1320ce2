import { type Dispatcher, request } from "undici";
import { ProvisionerError, type ProvisionerErrorCode } from "../errors.ts";
import { Backoff, connectionCause, isConnectionError, parseRetryAfter, type RetryPolicy } from "../retry.ts";
import { unquoted } from "../scrub.ts";

/** Bounds for retrying 429, 5xx and dropped connections. */
export type FlyRetryOptions = RetryPolicy;

export interface FlyLogger {
  warn(fields: Record<string, unknown>, message: string): void;
  debug?(fields: Record<string, unknown>, message: string): void;
}

export interface FlyApiOptions {
  apiToken: string;
  baseUrl: string;
  retry: FlyRetryOptions;
  requestTimeoutMs: number;
  dispatcher?: Dispatcher;
  now: () => number;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
  logger?: FlyLogger;
}

export interface FlyCall {
  /** OpenAPI operationId, used in errors and logs. */
  op: string;
  method: "GET" | "POST" | "DELETE";
  path: string;
  query?: Record<string, string | undefined>;
  body?: unknown;
  nonce?: string;
  /** false for non-idempotent creates: the caller looks for the resource before trying again. */
  retry?: boolean;
  /** Statuses returned to the caller instead of thrown (404 for "already gone", 408 for waits). */
  accept?: readonly number[];
  timeoutMs?: number;
}

export interface FlyReply<T = unknown> {
  status: number;
  body: T;
  requestId: string | undefined;
}

interface FlyErrorBody {
  error?: string;
  message?: string;
  status?: string;
}

/** Fly's own words from an error body, without what it quotes: only ever matched against, never passed on. */
function errorText(body: unknown): string {
  if (body && typeof body === "object") {
    const b = body as FlyErrorBody;
    if (typeof b.error === "string") return unquoted(b.error);
    if (typeof b.message === "string") return unquoted(b.message);
  }
  return typeof body === "string" ? unquoted(body) : "";
}

/**
 * Fly's answers an operator needs told apart, recognised by their text and reported in these fixed words. Fly's own
 * text is never passed on: an answer to a machine create or update may quote its config, env (secrets) included.
 */
const FLY_ERROR_CLASSES: readonly (readonly [RegExp, string])[] = [
  [/image|manifest|registry/i, "image not found or not accessible"],
  [/capacity|could not reserve resource/i, "insufficient capacity"],
  [/lease/i, "machine lease"],
  [/not found|does not exist/i, "not found"],
  [/already exists|name.*taken|unique/i, "name already taken"],
  [/invalid.*(state|transition)|current state|is not in/i, "machine in another state"],
  [/rate limit/i, "rate limited"],
  [/timed? ?out|deadline/i, "timed out"],
];

function genericReason(op: string, status: number): string {
  if (status === 400)
    return op === "Machines_create" ? "Fly refused the machine configuration" : "bad request";
  if (status === 401 || status === 403) return "unauthorized";
  if (status === 404) return "not found";
  if (status === 408) return "timed out";
  if (status === 409) return "conflict";
  if (status === 412) return "precondition failed";
  if (status === 422) return "unprocessable";
  if (status === 429) return "rate limited";
  if (status >= 500) return "Fly internal error";
  return "unexpected answer";
}

/** Fly's short status codes (`insufficient_capacity`, `unknown`) pass; anything else is dropped. */
function safeToken(value: unknown, pattern: RegExp): string | undefined {
  return typeof value === "string" && pattern.test(value) ? value : undefined;
}

/**
 * Maps a Fly answer to a ProvisionerError that says what failed, why, and the fly-request-id to quote to Fly, built
 * from the operation, the HTTP status and fields checked here: never from Fly's error text.
 */
export function flyError(
  call: Pick<FlyCall, "op">,
  reply: FlyReply & { retryAfterMs?: number },
): ProvisionerError {
  const text = errorText(reply.body);
  const flyStatus = safeToken(
    reply.body && typeof reply.body === "object" ? (reply.body as FlyErrorBody).status : undefined,
    /^[a-z_]{1,40}$/,
  );
  const requestId = safeToken(reply.requestId, /^[A-Za-z0-9_-]{1,100}$/);
  const field = /\binvalid (config(?:\.[A-Za-z0-9_]{1,64}){1,4})/.exec(text)?.[1];
  const known = field
    ? `${genericReason(call.op, reply.status)} (invalid ${field})`
    : FLY_ERROR_CLASSES.find(([pattern]) => pattern.test(text))?.[1];
  let code: ProvisionerErrorCode = "backend_error";
  let retryable = false;
  if (flyStatus === "insufficient_capacity") {
    code = "capacity";
    retryable = true;
  } else if (reply.status === 400 && /image|manifest|registry/i.test(text)) code = "image_unavailable";
  else if (reply.status === 400) code = "invalid_spec";
  else if (reply.status === 404) code = "not_found";
  else if (reply.status === 408) [code, retryable] = ["timeout", true];
  else if (reply.status === 409) [code, retryable] = ["conflict", true];
  else if (reply.status === 412 || reply.status === 422) code = "conflict";
  else if (reply.status === 429) [code, retryable] = ["rate_limited", true];
  else if (reply.status >= 500) [code, retryable] = ["backend_unavailable", true];
  const reason =
    flyStatus === "insufficient_capacity"
      ? "insufficient capacity"
      : (known ?? genericReason(call.op, reply.status));
  const hint =
    reply.status === 401 || reply.status === 403 ? " (check FLY_API_TOKEN and FLY_WORKSPACE_APP)" : "";
  return new ProvisionerError(
    code,
    `Fly ${call.op} failed with HTTP ${reply.status}: ${reason}${hint} (fly-request-id ${requestId ?? "none"})`,
    retryable,
    {
      operation: call.op,
      httpStatus: reply.status,
      flyStatus,
      flyRequestId: requestId,
      reason,
      transient: reply.status === 429 || reply.status >= 500,
      retryAfterMs: reply.retryAfterMs,
    },
  );
}

/**
 * A Machines API path: the literal parts as written, every interpolated value (an app name, a machine or volume id)
 * percent-encoded as exactly one segment. An empty, `.` or `..` value is refused, since URL parsing would drop or
 * resolve it and the request would reach another resource than the one named.
 */
export function flyPath(parts: TemplateStringsArray, ...segments: string[]): string {
  let out = parts[0] ?? "";
  segments.forEach((segment, index) => {
    if (typeof segment !== "string" || segment === "" || segment === "." || segment === "..") {
      throw new ProvisionerError("invalid_spec", "a Fly API path segment is empty or a dot segment", false);
    }
    out += encodeURIComponent(segment) + (parts[index + 1] ?? "");
  });
  return out;
}

/** The Machines API over undici: bearer auth, JSON, bounded retries with jitter that honour Retry-After. */
export class FlyApi {
  constructor(private readonly options: FlyApiOptions) {}

  backoff(): Backoff {
    return new Backoff(this.options.retry, this.options.now, this.options.random);
  }

  async call<T = unknown>(call: FlyCall): Promise<FlyReply<T>> {
    const backoff = this.backoff();
    for (;;) {
      let failure: ProvisionerError;
      let retryAfterMs: number | undefined;
      try {
        const reply = await this.once(call);
        if (reply.status < 300 || call.accept?.includes(reply.status)) return reply as FlyReply<T>;
        failure = flyError(call, reply);
        if (!failure.details.transient) throw failure;
        retryAfterMs = reply.retryAfterMs;
      } catch (error) {
        if (error instanceof ProvisionerError) throw error;
        if (!isConnectionError(error)) throw error;
        failure = new ProvisionerError(
          "backend_unavailable",
          `Fly ${call.op} failed: connection error (${connectionCause(error)}); the request may have been applied`,
          true,
          { operation: call.op, transient: true, connection: true },
        );
      }
      const delay = call.retry === false ? null : backoff.next(retryAfterMs);
      if (delay === null) {
        if (call.retry !== false && backoff.attempts > 1) {
          failure.message = `${failure.message}; gave up after ${backoff.attempts} attempts`;
        }
        throw failure;
      }
      this.options.logger?.warn(
        { operation: call.op, attempt: backoff.attempts, delayMs: delay, error: failure.message },
        "fly request failed; retrying",
      );
      await this.options.sleep(delay);
    }
  }

  private async once(call: FlyCall): Promise<FlyReply & { retryAfterMs?: number }> {
    const url = new URL(`/v1${call.path}`, this.options.baseUrl);
    // What is sent is exactly the path that was built (flyPath): nothing the URL parser would rewrite.
    if (url.pathname !== `/v1${call.path}`) {
      throw new ProvisionerError(
        "invalid_spec",
        `Fly ${call.op}: the request path is not a plain path`,
        false,
      );
    }
    for (const [key, value] of Object.entries(call.query ?? {})) {
      if (value !== undefined) url.searchParams.set(key, value);
    }
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.options.apiToken}`,
      accept: "application/json",
    };
    if (call.body !== undefined) headers["content-type"] = "application/json";
    if (call.nonce) headers["fly-machine-lease-nonce"] = call.nonce;
    const timeout = call.timeoutMs ?? this.options.requestTimeoutMs;
    const res = await request(url, {
      method: call.method,
      headers,
      body: call.body === undefined ? undefined : JSON.stringify(call.body),
      dispatcher: this.options.dispatcher,
      headersTimeout: timeout,
      bodyTimeout: timeout,
    });
    const text = await res.body.text();
    let body: unknown = text;
    if (text !== "") {
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    }
    const requestId = res.headers["fly-request-id"];
    return {
      status: res.statusCode,
      body,
      requestId: Array.isArray(requestId) ? requestId[0] : requestId,
      retryAfterMs: parseRetryAfter(res.headers["retry-after"], this.options.now()),
    };
  }
}

import type { Dispatcher } from "undici";
import { ProvisionerError, type ProvisionerErrorCode } from "../errors.ts";
import { type JsonCall, JsonClient, type JsonReply } from "../json-client.ts";
import { type Backoff, connectionCause, type RetryPolicy } from "../retry.ts";
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

export interface FlyCall extends JsonCall {
  /** OpenAPI operationId, used in errors and logs. */
  op: string;
  method: "GET" | "POST" | "DELETE";
  query?: Record<string, string | undefined>;
  nonce?: string;
  /** false for non-idempotent creates: the caller looks for the resource before trying again. */
  retry?: boolean;
}

export type FlyReply<T = unknown> = JsonReply<T>;

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
    return op === "Machines_create" || op === "Machines_update"
      ? "Fly refused the machine configuration"
      : "bad request";
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
export function flyError(call: Pick<FlyCall, "op">, reply: FlyReply): ProvisionerError {
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

/** The Machines API path of a call under the base URL, with its query; refuses what the URL parser would rewrite. */
function flyUrl(baseUrl: string, call: FlyCall): URL {
  const url = new URL(`/v1${call.path}`, baseUrl);
  // What is sent is exactly the path that was built (flyPath): nothing the URL parser would rewrite.
  if (url.pathname !== `/v1${call.path}`) {
    throw new ProvisionerError("invalid_spec", `Fly ${call.op}: the request path is not a plain path`, false);
  }
  for (const [key, value] of Object.entries(call.query ?? {})) {
    if (value !== undefined) url.searchParams.set(key, value);
  }
  return url;
}

/** The Machines API over the shared JSON client: bearer auth, bounded retries with jitter that honour Retry-After. */
export class FlyApi {
  private readonly client: JsonClient<FlyCall>;

  constructor(options: FlyApiOptions) {
    this.client = new JsonClient<FlyCall>({
      retry: options.retry,
      requestTimeoutMs: options.requestTimeoutMs,
      dispatcher: options.dispatcher,
      now: options.now,
      random: options.random,
      sleep: options.sleep,
      logger: options.logger,
      requestIdHeader: "fly-request-id",
      retryMessage: "fly request failed; retrying",
      url: (call) => flyUrl(options.baseUrl, call),
      headers: (call) => ({
        authorization: `Bearer ${options.apiToken}`,
        ...(call.nonce ? { "fly-machine-lease-nonce": call.nonce } : {}),
      }),
      answerError: flyError,
      connectionError: (call, error) =>
        new ProvisionerError(
          "backend_unavailable",
          `Fly ${call.op} failed: connection error (${connectionCause(error)}); the request may have been applied`,
          true,
          { operation: call.op, transient: true, connection: true },
        ),
      abortedError: (call) =>
        new ProvisionerError("timeout", `Fly ${call.op} aborted`, true, { operation: call.op }),
    });
  }

  backoff(): Backoff {
    return this.client.backoff();
  }

  call<T = unknown>(call: FlyCall): Promise<FlyReply<T>> {
    return this.client.call<T>(call.retry === false ? { ...call, maxAttempts: 1 } : call);
  }
}

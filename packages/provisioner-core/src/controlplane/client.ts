/**
 * The tenant's signed HTTP client for the control plane's /cp/* routes. Every send is signed afresh (new timestamp
 * and nonce, including each retry) as packages/contracts/src/controlplane.ts describes; 5xx, 429 and dropped or
 * timed-out connections are retried with capped exponential backoff and jitter, which is safe because every call
 * the tenant makes is idempotent (mutations carry an Idempotency-Key). Other 4xx answers are never retried.
 *
 * The tenant credential and signing key go into request headers only; no log line, error or detail carries them.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { CP_HEADERS, signRequest } from "@molecule/contracts";
import { type Dispatcher, request } from "undici";
import { ProvisionerError, type ProvisionerErrorCode } from "../errors.ts";
import {
  Backoff,
  connectionCause,
  isConnectionError,
  isTimeout,
  parseRetryAfter,
  type RetryPolicy,
} from "../retry.ts";

/** Where a tenant finds the control plane when CP_PROVISION_URL is not set. */
export const DEFAULT_CP_PROVISION_URL = "http://127.0.0.1:8090";

export const IDEMPOTENCY_KEY_HEADER = "idempotency-key";

export interface CpLogger {
  warn(fields: Record<string, unknown>, message: string): void;
  info?(fields: Record<string, unknown>, message: string): void;
  debug?(fields: Record<string, unknown>, message: string): void;
}

/** Bounds for retrying 429, 5xx and dropped connections. */
export type CpRetryOptions = RetryPolicy;

export const DEFAULT_CP_RETRY: CpRetryOptions = {
  maxAttempts: 6,
  baseDelayMs: 200,
  maxDelayMs: 5_000,
  maxElapsedMs: 60_000,
};

export interface ControlPlaneClientOptions {
  /** CP_PROVISION_URL */
  baseUrl: string;
  /** CP_TENANT_TOKEN: sent as the bearer; identifies the org. */
  tenantToken: string;
  /** PROVISION_SHARED_SECRET as the control plane injects it: the org's derived signing key. */
  signingKey: string;
  dispatcher?: Dispatcher;
  /** Per send: headers and body must arrive within this (default 15 s). */
  requestTimeoutMs?: number;
  /** Shorthand for `retry.maxAttempts`. */
  maxAttempts?: number;
  retry?: Partial<CpRetryOptions>;
  clock?: { now(): number };
  random?: () => number;
  /** Waits between retries; must reject when `signal` aborts. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  logger?: CpLogger;
}

export interface CpCall {
  /** Names the call in errors and logs ("provision", "operation", "status", …). */
  op: string;
  method: "GET" | "POST" | "DELETE";
  /** Path under the base URL, with its query: `/cp/workspaces/ws_…/status`. */
  path: string;
  body?: unknown;
  idempotencyKey?: string;
  signal?: AbortSignal;
  /** Statuses returned to the caller instead of thrown (404 for "already gone"). */
  accept?: readonly number[];
  /** Overrides the client's retry.maxAttempts for this call (1: no retry). */
  maxAttempts?: number;
}

export interface CpReply<T = unknown> {
  status: number;
  body: T;
  requestId: string | undefined;
}

interface RawReply extends CpReply {
  retryAfterMs?: number;
}

export function abortedError(op: string, signal: AbortSignal): ProvisionerError {
  return new ProvisionerError("timeout", `control plane ${op} aborted`, true, {
    operation: op,
    reason: signal.reason instanceof Error ? signal.reason.message : String(signal.reason),
  });
}

/** Resolves after `ms`, or rejects with the signal's abort as soon as it fires. */
export function abortableSleep(ms: number, signal?: AbortSignal, op = "wait"): Promise<void> {
  if (signal?.aborted) return Promise.reject(abortedError(op, signal));
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      if (signal) reject(abortedError(op, signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

interface CpErrorBody {
  error?: { code?: unknown; message?: unknown; requestId?: unknown; request_id?: unknown };
}

/**
 * The control plane's error envelope. Its messages are built from codes and safe fields like this service's own; a
 * message is still cut to one short line, and a code or request id that does not look like one is dropped. Anything
 * that is not an envelope (a proxy's page, say) is not quoted at all.
 */
function envelope(body: unknown): { code?: string; message?: string; requestId?: string } {
  const error = body && typeof body === "object" ? (body as CpErrorBody).error : undefined;
  if (!error || typeof error !== "object") return {};
  const token = (value: unknown, pattern: RegExp) =>
    typeof value === "string" && pattern.test(value) ? value : undefined;
  const message =
    typeof error.message === "string" && error.message !== ""
      ? // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is cut at
        (error.message.split(/[\u0000-\u001f\u007f]/)[0] ?? "").slice(0, 300)
      : undefined;
  return {
    code: token(error.code, /^[a-z][a-z0-9_]{0,40}$/),
    message: message || undefined,
    requestId: token(error.requestId ?? error.request_id, /^[A-Za-z0-9_-]{1,100}$/),
  };
}

/** Maps a control-plane error answer to a ProvisionerError that says which call failed, why, and its request id. */
export function cpError(call: Pick<CpCall, "op" | "method" | "path">, reply: RawReply): ProvisionerError {
  const env = envelope(reply.body);
  const status = reply.status;
  let code: ProvisionerErrorCode = "backend_error";
  let retryable = false;
  if (status === 400 || status === 413 || status === 422) code = "invalid_spec";
  else if (status === 404) code = "not_found";
  else if (status === 408) [code, retryable] = ["timeout", true];
  else if (status === 409) code = "conflict";
  else if (status === 429) [code, retryable] = ["rate_limited", true];
  else if (status >= 500) [code, retryable] = ["backend_unavailable", true];
  const hint =
    status === 401 || status === 403
      ? " (check CP_TENANT_TOKEN, PROVISION_SHARED_SECRET and this host's clock)"
      : "";
  const what = env.code ? `${env.code}: ${env.message ?? "no message"}` : (env.message ?? "no error message");
  const requestId = env.requestId ?? reply.requestId;
  return new ProvisionerError(
    code,
    `control plane ${call.op} (${call.method} ${call.path}) failed with HTTP ${status}: ${what}${hint} (request ${requestId ?? "none"})`,
    retryable,
    {
      operation: call.op,
      httpStatus: status,
      cpCode: env.code,
      requestId,
      transient: status === 429 || status >= 500,
      retryAfterMs: reply.retryAfterMs,
    },
  );
}

/** A fresh random key, for mutating calls whose caller gave none; kept for the call's retries. */
export function newIdempotencyKey(): string {
  return `tenant-${randomUUID()}`;
}

export class ControlPlaneClient {
  readonly baseUrl: string;
  private readonly retry: CpRetryOptions;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  private readonly requestTimeoutMs: number;

  constructor(private readonly options: ControlPlaneClientOptions) {
    if (!options.baseUrl)
      throw new ProvisionerError("invalid_spec", "controlplane: baseUrl is required", false);
    if (!options.tenantToken)
      throw new ProvisionerError(
        "invalid_spec",
        "controlplane: tenantToken (CP_TENANT_TOKEN) is required",
        false,
      );
    if (!options.signingKey)
      throw new ProvisionerError(
        "invalid_spec",
        "controlplane: signingKey (PROVISION_SHARED_SECRET) is required",
        false,
      );
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.retry = {
      ...DEFAULT_CP_RETRY,
      ...options.retry,
      ...(options.maxAttempts ? { maxAttempts: options.maxAttempts } : {}),
    };
    this.now = options.clock ? () => (options.clock as { now(): number }).now() : Date.now;
    this.random = options.random ?? Math.random;
    this.sleep = options.sleep ?? ((ms, signal) => abortableSleep(ms, signal));
    this.requestTimeoutMs = options.requestTimeoutMs ?? 15_000;
  }

  /** The signature headers for one send: a new timestamp and nonce every time. */
  signedHeaders(method: string, path: string, body: string): Record<string, string> {
    const timestamp = String(Math.floor(this.now() / 1000));
    const nonce = randomBytes(16).toString("hex");
    return {
      authorization: `Bearer ${this.options.tenantToken}`,
      [CP_HEADERS.timestamp]: timestamp,
      [CP_HEADERS.nonce]: nonce,
      [CP_HEADERS.signature]: signRequest(this.options.signingKey, { method, path, timestamp, nonce, body }),
    };
  }

  /**
   * Sends the call, retrying transient failures. Answers below 300 (and `accept`ed statuses) are returned with
   * their parsed JSON body; anything else throws a ProvisionerError whose `retryable` says whether a later
   * attempt may succeed.
   */
  async call<T = unknown>(call: CpCall): Promise<CpReply<T>> {
    const backoff = new Backoff(
      { ...this.retry, maxAttempts: call.maxAttempts ?? this.retry.maxAttempts },
      this.now,
      this.random,
    );
    const body = call.body === undefined ? "" : JSON.stringify(call.body);
    for (;;) {
      if (call.signal?.aborted) throw abortedError(call.op, call.signal);
      let failure: ProvisionerError;
      let retryAfterMs: number | undefined;
      try {
        const reply = await this.once(call, body);
        if (reply.status < 300 || call.accept?.includes(reply.status)) return reply as CpReply<T>;
        failure = cpError(call, reply);
        if (!failure.details.transient) throw failure;
        retryAfterMs = reply.retryAfterMs;
      } catch (error) {
        if (error instanceof ProvisionerError) throw error;
        if (call.signal?.aborted) throw abortedError(call.op, call.signal);
        if (!isConnectionError(error)) throw error;
        const timedOut = isTimeout(error);
        failure = new ProvisionerError(
          timedOut ? "timeout" : "backend_unavailable",
          `control plane ${call.op} (${call.method} ${call.path}) failed: ${timedOut ? "timed out" : "connection error"} (${connectionCause(error)}) at ${this.baseUrl}`,
          true,
          { operation: call.op, transient: true, connection: true },
        );
      }
      const delay = backoff.next(retryAfterMs);
      if (delay === null) {
        if (backoff.attempts > 1)
          failure.message = `${failure.message}; gave up after ${backoff.attempts} attempts`;
        throw failure;
      }
      this.options.logger?.warn(
        {
          operation: call.op,
          method: call.method,
          path: call.path,
          attempt: backoff.attempts,
          delayMs: delay,
          error: failure.message,
        },
        "control plane request failed; retrying",
      );
      await this.sleep(delay, call.signal);
    }
  }

  private async once(call: CpCall, body: string): Promise<RawReply> {
    const url = new URL(`${this.baseUrl}${call.path}`);
    const signedPath = `${url.pathname}${url.search}`;
    const headers: Record<string, string> = {
      ...this.signedHeaders(call.method, signedPath, body),
      accept: "application/json",
    };
    if (call.body !== undefined) headers["content-type"] = "application/json";
    if (call.idempotencyKey) headers[IDEMPOTENCY_KEY_HEADER] = call.idempotencyKey;
    const res = await request(url, {
      method: call.method,
      headers,
      body: call.body === undefined ? undefined : body,
      dispatcher: this.options.dispatcher,
      headersTimeout: this.requestTimeoutMs,
      bodyTimeout: this.requestTimeoutMs,
      signal: call.signal,
    });
    const text = await res.body.text();
    let parsed: unknown = text;
    if (text !== "") {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
    }
    const requestId = res.headers["x-request-id"];
    return {
      status: res.statusCode,
      body: parsed,
      requestId: Array.isArray(requestId) ? requestId[0] : requestId,
      retryAfterMs: parseRetryAfter(res.headers["retry-after"], this.now()),
    };
  }
}

/**
 * The tenant's signed HTTP client for the control plane's /cp/* routes. Every send is signed afresh (new timestamp
 * and nonce, including each retry) as packages/contracts/src/controlplane.ts describes; 5xx, 429 and dropped or
 * timed-out connections are retried with capped exponential backoff and jitter, which is safe because every call
 * the tenant makes is idempotent (mutations carry an Idempotency-Key). Other 4xx answers are never retried.
 *
 * The tenant credential and signing key go into request headers only; no log line, error or detail carries them.
 */
import { randomUUID } from "node:crypto";
import { CP_HEADERS } from "@molecule/contracts";
import { mintNonce, signRequest } from "@molecule/identity/signing";
import type { Dispatcher } from "undici";
import { ProvisionerError, type ProvisionerErrorCode } from "../errors.ts";
import { type JsonCall, JsonClient, type JsonReply } from "../json-client.ts";
import { connectionCause, isTimeout, type RetryPolicy } from "../retry.ts";

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

export interface CpCall extends JsonCall {
  /** Names the call in errors and logs ("provision", "operation", "status", …). */
  op: string;
  method: "GET" | "POST" | "DELETE";
  /** Path under the base URL, with its query: `/cp/workspaces/ws_…/status`. */
  path: string;
  idempotencyKey?: string;
}

export type CpReply<T = unknown> = JsonReply<T>;

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
 * The error envelope both services answer with (the control plane's, a tenant platform's). Its messages are built
 * from codes and safe fields like this service's own; a message is still cut to one short line, and a code or request
 * id that does not look like one is dropped. Anything that is not an envelope (a proxy's page, say) is not quoted.
 */
export function errorEnvelope(body: unknown): { code?: string; message?: string; requestId?: string } {
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
export function cpError(call: Pick<CpCall, "op" | "method" | "path">, reply: CpReply): ProvisionerError {
  const env = errorEnvelope(reply.body);
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
  private readonly now: () => number;
  private readonly client: JsonClient<CpCall>;

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
    const baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.baseUrl = baseUrl;
    this.now = options.clock ? () => (options.clock as { now(): number }).now() : Date.now;
    this.client = new JsonClient<CpCall>({
      retry: {
        ...DEFAULT_CP_RETRY,
        ...options.retry,
        ...(options.maxAttempts ? { maxAttempts: options.maxAttempts } : {}),
      },
      requestTimeoutMs: options.requestTimeoutMs ?? 15_000,
      dispatcher: options.dispatcher,
      now: this.now,
      random: options.random ?? Math.random,
      sleep: options.sleep ?? ((ms, signal) => abortableSleep(ms, signal)),
      logger: options.logger,
      requestIdHeader: "x-request-id",
      retryMessage: "control plane request failed; retrying",
      url: (call) => new URL(`${baseUrl}${call.path}`),
      headers: (call, url, body) => ({
        ...this.signedHeaders(call.method, `${url.pathname}${url.search}`, body),
        ...(call.idempotencyKey ? { [IDEMPOTENCY_KEY_HEADER]: call.idempotencyKey } : {}),
      }),
      answerError: cpError,
      connectionError: (call, error) => {
        const timedOut = isTimeout(error);
        return new ProvisionerError(
          timedOut ? "timeout" : "backend_unavailable",
          `control plane ${call.op} (${call.method} ${call.path}) failed: ${timedOut ? "timed out" : "connection error"} (${connectionCause(error)}) at ${baseUrl}`,
          true,
          { operation: call.op, transient: true, connection: true },
        );
      },
      abortedError: (call, signal) => abortedError(call.op, signal),
    });
  }

  /** The signature headers for one send: a new timestamp and nonce every time. */
  signedHeaders(method: string, path: string, body: string): Record<string, string> {
    const timestamp = String(Math.floor(this.now() / 1000));
    const nonce = mintNonce();
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
  call<T = unknown>(call: CpCall): Promise<CpReply<T>> {
    return this.client.call<T>(call);
  }
}

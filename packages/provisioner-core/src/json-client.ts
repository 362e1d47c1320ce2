/**
 * The one retrying JSON client the HTTP backends share (the Fly Machines API, the control plane's /cp/* API): undici,
 * a timeout per send, an AbortSignal honoured while sending and while waiting, and retries of dropped connections,
 * 5xx and 429 under a RetryPolicy (contracts' backoff, Retry-After honoured). What differs per backend is passed in
 * as hooks: how a call's URL and headers are built (the control plane signs every send afresh), and how a failure is
 * worded. Those hooks build messages from codes and fields they have checked, never from the other side's raw text.
 */
import { type Dispatcher, request } from "undici";
import { ProvisionerError } from "./errors.ts";
import { Backoff, isConnectionError, parseRetryAfter, type RetryPolicy } from "./retry.ts";

export type HttpMethod = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

export interface JsonCall {
  /** Names the call in errors and logs (an OpenAPI operationId, "provision", …). */
  op: string;
  method: HttpMethod;
  /** The path the backend's `url` hook turns into the request URL. */
  path: string;
  body?: unknown;
  signal?: AbortSignal;
  /** Statuses returned to the caller instead of thrown (404 for "already gone", 408 for waits). */
  accept?: readonly number[];
  /** Sends for this call, the first included (1: no retry); default the client's policy. */
  maxAttempts?: number;
  /** Per send, overriding the client's `requestTimeoutMs` (a long poll). */
  timeoutMs?: number;
}

export interface JsonReply<T = unknown> {
  status: number;
  /** The parsed JSON, or the text when the answer is not JSON ("" when empty). */
  body: T;
  /** The backend's request id header, as sent (unchecked: error hooks check it before quoting it). */
  requestId: string | undefined;
  retryAfterMs?: number;
}

export interface JsonClientLogger {
  warn(fields: Record<string, unknown>, message: string): void;
}

export interface JsonClientOptions<C extends JsonCall> {
  retry: RetryPolicy;
  /** Per send: headers and body must arrive within this. */
  requestTimeoutMs: number;
  dispatcher?: Dispatcher;
  now: () => number;
  random: () => number;
  /** Waits between retries; may reject when `signal` aborts (the client checks the signal after it either way). */
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  logger?: JsonClientLogger;
  /** The response header carrying the backend's request id. */
  requestIdHeader: string;
  /** The log line of a retry ("fly request failed; retrying"). */
  retryMessage: string;
  /** The request URL of a call; throws a ProvisionerError to refuse it (nothing is sent). */
  url(call: C): URL;
  /** The headers of one send (called again for every retry), beyond accept and content-type. */
  headers(call: C, url: URL, body: string): Record<string, string>;
  /** A failed answer (not below 300, not accepted). Retried while `details.transient` is true. */
  answerError(call: C, reply: JsonReply): ProvisionerError;
  /** A send that got no answer (isConnectionError); always retried. */
  connectionError(call: C, error: unknown): ProvisionerError;
  /** The call's signal fired. */
  abortedError(call: C, signal: AbortSignal): ProvisionerError;
}

export class JsonClient<C extends JsonCall = JsonCall> {
  constructor(private readonly options: JsonClientOptions<C>) {}

  /** A fresh retry budget under this client's policy, for callers that retry a sequence of calls themselves. */
  backoff(maxAttempts = this.options.retry.maxAttempts): Backoff {
    return new Backoff({ ...this.options.retry, maxAttempts }, this.options.now, this.options.random);
  }

  /**
   * Sends the call, retrying transient failures. Answers below 300 (and `accept`ed statuses) are returned; anything
   * else throws the backend's ProvisionerError, whose `retryable` says whether a later attempt may succeed.
   */
  async call<T = unknown>(call: C): Promise<JsonReply<T>> {
    const backoff = this.backoff(call.maxAttempts);
    const body = call.body === undefined ? "" : JSON.stringify(call.body);
    for (;;) {
      if (call.signal?.aborted) throw this.options.abortedError(call, call.signal);
      let failure: ProvisionerError;
      let retryAfterMs: number | undefined;
      try {
        const reply = await this.once(call, body);
        if (reply.status < 300 || call.accept?.includes(reply.status)) return reply as JsonReply<T>;
        failure = this.options.answerError(call, reply);
        if (!failure.details.transient) throw failure;
        retryAfterMs = reply.retryAfterMs;
      } catch (error) {
        if (error instanceof ProvisionerError) throw error;
        if (call.signal?.aborted) throw this.options.abortedError(call, call.signal);
        if (!isConnectionError(error)) throw error;
        failure = this.options.connectionError(call, error);
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
        this.options.retryMessage,
      );
      await this.options.sleep(delay, call.signal);
    }
  }

  private async once(call: C, body: string): Promise<JsonReply> {
    const url = this.options.url(call);
    const headers: Record<string, string> = {
      ...this.options.headers(call, url, body),
      accept: "application/json",
    };
    if (call.body !== undefined) headers["content-type"] = "application/json";
    const timeout = call.timeoutMs ?? this.options.requestTimeoutMs;
    const res = await request(url, {
      method: call.method,
      headers,
      body: call.body === undefined ? undefined : body,
      dispatcher: this.options.dispatcher,
      headersTimeout: timeout,
      bodyTimeout: timeout,
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
    const requestId = res.headers[this.options.requestIdHeader];
    return {
      status: res.statusCode,
      body: parsed,
      requestId: Array.isArray(requestId) ? requestId[0] : requestId,
      retryAfterMs: parseRetryAfter(res.headers["retry-after"], this.options.now()),
    };
  }
}

/**
 * The admin API as `molecule-cp` calls it: the bearer token on every request, a deadline per request, answers checked
 * against the contracts' schemas, and failures as errors whose text is fit for an operator's terminal (the server's
 * error envelope: code, message, request id). The token is only ever put in the Authorization header.
 */
import { ErrorEnvelope } from "@molecule/contracts";
import type { z } from "zod";

/** The control plane answered with an error: its envelope, or the bare status when the answer had none. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId: string | null,
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** `not_found: no org with slug "x" (HTTP 404, request req_…)` */
  describe(): string {
    const where = this.requestId ? `HTTP ${this.status}, request ${this.requestId}` : `HTTP ${this.status}`;
    return `${this.code}: ${this.message} (${where})`;
  }
}

/** No usable answer: the control plane was unreachable, too slow, or answered something the contracts do not allow. */
export class ConnectionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConnectionError";
  }
}

export interface AdminClientOptions {
  /** The control plane's base URL (`CP_URL`); a path prefix is kept. */
  url: string;
  token: string;
  timeoutMs: number;
  fetch?: typeof fetch;
}

export interface Answer<T> {
  /** The answer as the schema reads it. */
  data: T;
  /** The answer exactly as sent, for `--json` (fields this CLI does not know are kept). */
  raw: unknown;
}

export class AdminClient {
  private readonly base: string;
  private readonly fetchImpl: typeof fetch;

  constructor(private readonly options: AdminClientOptions) {
    this.base = options.url.replace(/\/+$/, "");
    this.fetchImpl = options.fetch ?? fetch;
  }

  /** Where requests go, for messages: the origin and path only (never credentials a URL might carry). */
  get target(): string {
    const url = new URL(this.base);
    return `${url.origin}${url.pathname === "/" ? "" : url.pathname}`;
  }

  async call<S extends z.ZodType>(
    method: string,
    path: string,
    schema: S,
    body?: unknown,
  ): Promise<Answer<z.infer<S>>> {
    const response = await this.send(method, path, body);
    const text = await response.text();
    const raw = parseJson(text);
    if (!response.ok) throw apiError(response, raw);
    const parsed = schema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = issue && issue.path.length > 0 ? ` at ${issue.path.join(".")}` : "";
      throw new ConnectionError(
        `unexpected answer to ${method} ${path} (HTTP ${response.status})${where}: ${issue?.message ?? "not JSON"}`,
      );
    }
    return { data: parsed.data, raw };
  }

  private async send(method: string, path: string, body: unknown): Promise<Response> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.options.token}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    try {
      return await this.fetchImpl(`${this.base}${path}`, {
        method,
        headers,
        redirect: "manual",
        signal: AbortSignal.timeout(this.options.timeoutMs),
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (err) {
      throw new ConnectionError(this.unreachable(err));
    }
  }

  private unreachable(err: unknown): string {
    if (err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError")) {
      return `no answer from ${this.target} within ${Math.round(this.options.timeoutMs / 1000)} s`;
    }
    // fetch's own message is a bare "fetch failed"; the cause names the problem (ECONNREFUSED, ENOTFOUND, …).
    const cause =
      err instanceof Error ? (err.cause as { code?: string; message?: string } | undefined) : undefined;
    const reason = cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err));
    return `cannot reach the control plane at ${this.target}: ${reason}`;
  }
}

function parseJson(text: string): unknown {
  if (text === "") return null;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function apiError(response: Response, raw: unknown): ApiError {
  const envelope = ErrorEnvelope.safeParse(raw);
  const headerId = response.headers.get("x-request-id");
  if (envelope.success) {
    const { code, message, requestId } = envelope.data.error;
    return new ApiError(response.status, code, message, requestId || headerId);
  }
  // A proxy in front of the control plane, or a redirect this client does not follow.
  const location = response.headers.get("location");
  const message = location
    ? `redirected to ${location} (use the control plane's own URL)`
    : `the control plane answered without an error envelope`;
  return new ApiError(response.status, `http_${response.status}`, message, headerId);
}

/**
 * The platform's registry and secrets API as seen from a workspace agent: register (boot token → auth token),
 * heartbeat, and pulling the workspace's secret values. Sends over node:http(s) (`nodeHttpTransport`), or the `fetch`
 * it is given; nothing else at run time.
 * The wire format is contracts' (`registry.ts`), imported as types only, so the bundled SDK carries no zod: what is
 * sent is checked against those types when this compiles, and answers are checked field by field here.
 */
import type {
  AwaitClaimBody,
  ClaimAnswer,
  HeartbeatResponse,
  RegisterBody,
  RegisterResponse,
  AgentCard as RegistryAgentCard,
  HeartbeatBody as RegistryHeartbeatBody,
} from "@molecule/contracts";
import { type FetchLike, fetchTransport, nodeHttpTransport, type Transport } from "./http-transport.ts";

export type { FetchLike } from "./http-transport.ts";

/**
 * An A2A agent card: the registry's (`name`, `description`, `version`, `skills`; other fields pass through) with the
 * URL the agent serves A2A at.
 */
export type AgentCard = RegistryAgentCard & { url?: string };

export interface RegisterResult {
  authToken: string;
  workspaceId: string;
  /** How often the platform wants heartbeats, when it says (`heartbeat_interval_seconds`). */
  heartbeatIntervalSeconds?: number;
  /**
   * What the platform's A2A proxy presents to this agent (`x-molecule-inbound-token`); the agent's A2A server
   * refuses requests without it. Null from a platform that issues none.
   */
  inboundToken: string | null;
  /**
   * The workspace's secret values, when the platform sent them with the answer (a registration with the boot token,
   * every secret readable); absent from older platforms and otherwise: pull them with `pullSecrets`. Never log them.
   */
  secrets?: Record<string, string>;
  /** The workspace's status once registered ("online": the registration counted as the first heartbeat). */
  status?: string;
}

/** What an agent reports about itself in a heartbeat (the workspace id is added by the client). */
export type HeartbeatBody = Pick<RegistryHeartbeatBody, "status" | "detail" | "active">;
export type HeartbeatStatus = NonNullable<HeartbeatBody["status"]>;

export interface HeartbeatResult {
  ok: true;
  /** The workspace status the platform holds after this heartbeat (e.g. "online"). */
  status: string;
  /** Heartbeat at least this often, when the platform says (`heartbeat_interval_seconds`). */
  heartbeatIntervalSeconds?: number;
}

/** The platform's `heartbeat_interval_seconds`, when it sent a usable one (older platforms send none). */
function advisedInterval(body: unknown): { heartbeatIntervalSeconds?: number } {
  const value = field<HeartbeatResponse>(body, "heartbeat_interval_seconds");
  return typeof value === "number" && Number.isInteger(value) && value > 0 && value <= 3_600
    ? { heartbeatIntervalSeconds: value }
    : {};
}

/**
 * Any failed call. `status` is the HTTP status, or null when no response arrived. `code` is the platform's error
 * code when it sent the error envelope, else one of `network_error`, `timeout`, `aborted`, `invalid_response`,
 * `http_<status>`. `retryable` is true for network failures, timeouts, 429 and 5xx.
 */
export class PlatformError extends Error {
  readonly status: number | null;
  readonly code: string;
  readonly requestId: string | undefined;
  readonly retryable: boolean;

  constructor(init: {
    status: number | null;
    code: string;
    message: string;
    requestId?: string;
    cause?: unknown;
  }) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "PlatformError";
    this.status = init.status;
    this.code = init.code;
    this.requestId = init.requestId;
    this.retryable =
      init.status === null
        ? init.code === "network_error" || init.code === "timeout"
        : init.status === 429 || init.status >= 500;
  }

  /** The credential used was rejected (401). */
  get unauthorized(): boolean {
    return this.status === 401;
  }

  /** The workspace no longer exists on the platform (404 or 410). */
  get workspaceGone(): boolean {
    return this.status === 404 || this.status === 410;
  }
}

export interface PlatformClientOptions {
  platformUrl: string;
  workspaceId: string;
  /** Sends every request through this `fetch` instead of node:http(s). */
  fetch?: FetchLike;
  /** Per-request timeout. Default 10 s. */
  timeoutMs?: number;
}

export interface CallOptions {
  signal?: AbortSignal;
}

/** A warm pool member's claim: the workspace it now is, and the boot token it registers with. */
export interface PoolClaim {
  workspaceId: string;
  bootToken: string;
  name: string;
  metadata: Record<string, unknown>;
}

export class PlatformClient {
  readonly platformUrl: string;
  readonly workspaceId: string;
  readonly #send: Transport;
  readonly #timeoutMs: number;

  constructor(options: PlatformClientOptions) {
    let url: URL;
    try {
      url = new URL(options.platformUrl);
    } catch {
      throw new TypeError(`platformUrl is not a valid URL: ${JSON.stringify(options.platformUrl)}`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new TypeError(`platformUrl must be http(s): ${JSON.stringify(options.platformUrl)}`);
    }
    if (!options.workspaceId) throw new TypeError("workspaceId is required");
    this.platformUrl = url.href.replace(/\/+$/, "");
    this.workspaceId = options.workspaceId;
    this.#send = options.fetch ? fetchTransport(options.fetch) : nodeHttpTransport;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** Exchanges the one-time boot token for the workspace's auth token. A spent boot token answers 401. */
  async register(
    bootToken: string,
    registration: { url: string | null; agentCard: AgentCard },
    options: CallOptions = {},
  ): Promise<RegisterResult> {
    const sent: RegisterBody = {
      id: this.workspaceId,
      url: registration.url,
      agent_card: registration.agentCard,
    };
    const body = await this.#call("POST", "/registry/register", bootToken, options.signal, sent);
    const answer = (body !== null && typeof body === "object" ? body : {}) as Partial<
      Record<keyof RegisterResponse, unknown>
    >;
    const { auth_token: authToken, workspace_id: workspaceId, inbound_token: inboundToken } = answer;
    if (typeof authToken !== "string" || authToken === "" || typeof workspaceId !== "string") {
      throw invalidResponse("register", 200);
    }
    if (inboundToken !== undefined && (typeof inboundToken !== "string" || inboundToken === "")) {
      throw invalidResponse("register", 200);
    }
    const secrets = secretValues(answer.secrets);
    return {
      authToken,
      workspaceId,
      inboundToken: inboundToken ?? null,
      ...advisedInterval(body),
      ...(secrets ? { secrets } : {}),
      ...(typeof answer.status === "string" ? { status: answer.status } : {}),
    };
  }

  /**
   * A warm pool member's agent waits (up to `waitSeconds`, on the platform) for a create to claim it: the claim, or
   * null when none came in that time (ask again). 404 once the member was removed from its pool.
   */
  async awaitClaim(
    poolToken: string,
    waitSeconds: number,
    options: CallOptions = {},
  ): Promise<PoolClaim | null> {
    const sent: AwaitClaimBody = { id: this.workspaceId, wait_seconds: waitSeconds };
    // The platform holds the request for up to the wait: the call's own bound is the wait and then some.
    const timeoutMs = this.#timeoutMs + waitSeconds * 1000;
    const answer = await this.#call("POST", "/registry/claim", poolToken, options.signal, sent, timeoutMs);
    const claimed = field<ClaimAnswer>(answer, "claimed");
    if (claimed === false) return null;
    const workspaceId = field(answer, "workspace_id");
    const bootToken = field(answer, "boot_token");
    const name = field(answer, "name");
    const metadata = field(answer, "metadata");
    if (
      claimed !== true ||
      workspaceId !== this.workspaceId ||
      typeof bootToken !== "string" ||
      bootToken === "" ||
      typeof name !== "string" ||
      metadata === null ||
      typeof metadata !== "object"
    ) {
      throw invalidResponse("claim", 200);
    }
    return { workspaceId, bootToken, name, metadata: metadata as Record<string, unknown> };
  }

  async heartbeat(
    authToken: string,
    body: HeartbeatBody = {},
    options: CallOptions = {},
  ): Promise<HeartbeatResult> {
    const sent: RegistryHeartbeatBody = {
      workspace_id: this.workspaceId,
      ...(body.status === undefined ? {} : { status: body.status }),
      ...(body.detail === undefined ? {} : { detail: body.detail }),
      // Sent only when true: a platform that predates it never sees the field, and false is the default anyway.
      ...(body.active ? { active: true } : {}),
    };
    const res = await this.#call("POST", "/registry/heartbeat", authToken, options.signal, sent);
    const status = field<HeartbeatResponse>(res, "status");
    if (field<HeartbeatResponse>(res, "ok") !== true || typeof status !== "string") {
      throw invalidResponse("heartbeat", 200);
    }
    return { ok: true, status, ...advisedInterval(res) };
  }

  /** The workspace's decrypted secret values. Never log the result. */
  async pullSecrets(authToken: string, options: CallOptions = {}): Promise<Record<string, string>> {
    const path = `/workspaces/${encodeURIComponent(this.workspaceId)}/secrets/values`;
    const res = await this.#call("GET", path, authToken, options.signal);
    const secrets = secretValues(field(res, "secrets"));
    if (!secrets) throw invalidResponse("secrets", 200);
    return secrets;
  }

  async #call(
    method: "GET" | "POST",
    path: string,
    token: string,
    signal: AbortSignal | undefined,
    body?: unknown,
    timeoutMs = this.#timeoutMs,
  ): Promise<unknown> {
    if (signal?.aborted) throw aborted();
    const timeout = AbortSignal.timeout(timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";

    let status: number;
    let text: string;
    try {
      ({ status, text } = await this.#send(`${this.platformUrl}${path}`, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: combined,
      }));
    } catch (err) {
      if (signal?.aborted) throw aborted();
      if (timeout.aborted) {
        throw new PlatformError({
          status: null,
          code: "timeout",
          message: `${method} ${path}: no response within ${timeoutMs} ms`,
        });
      }
      throw new PlatformError({
        status: null,
        code: "network_error",
        message: `${method} ${path}: ${describeNetworkError(err)}`,
        cause: err,
      });
    }

    let parsed: unknown;
    try {
      parsed = text === "" ? undefined : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (status < 200 || status > 299) {
      const envelope = field(parsed, "error");
      const code = field(envelope, "code");
      const message = field(envelope, "message");
      const requestId = field(envelope, "requestId");
      throw new PlatformError({
        status,
        code: typeof code === "string" ? code : `http_${status}`,
        message: `${method} ${path} answered ${status}${typeof message === "string" ? `: ${message}` : ""}`,
        requestId: typeof requestId === "string" ? requestId : undefined,
      });
    }
    if (parsed === undefined) throw invalidResponse(path, status);
    return parsed;
  }
}

/**
 * A `{name: value}` object of strings, or null for anything else. Never puts a value in an error: a register answer
 * whose secrets are malformed is used without them (its boot token is spent; the agent pulls them instead).
 */
function secretValues(value: unknown): Record<string, string> | null {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return null;
  const out: Record<string, string> = {};
  for (const [key, secret] of Object.entries(value)) {
    if (typeof secret !== "string") return null;
    out[key] = secret;
  }
  return out;
}

/** One field of an answer, unchecked; `W` names the wire type whose field it is, so a renamed field fails to compile. */
function field<W = Record<string, unknown>>(value: unknown, key: keyof W & string): unknown {
  return value !== null && typeof value === "object" ? (value as Record<string, unknown>)[key] : undefined;
}

function invalidResponse(what: string, status: number): PlatformError {
  return new PlatformError({
    status,
    code: "invalid_response",
    message: `${what}: unexpected response body`,
  });
}

function aborted(): PlatformError {
  return new PlatformError({ status: null, code: "aborted", message: "request aborted" });
}

function describeNetworkError(err: unknown): string {
  // node:http puts the system error's code on the error itself; fetch on its cause.
  const own = field(err, "code");
  if (typeof own === "string") return own;
  const cause = field(err, "cause");
  const code = field(cause, "code");
  if (typeof code === "string") return code;
  const causeMessage = field(cause, "message");
  if (typeof causeMessage === "string" && causeMessage !== "") return causeMessage;
  return err instanceof Error ? err.message : "request failed";
}

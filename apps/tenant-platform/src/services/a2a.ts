import {
  A2A_VERSION_HEADER,
  type A2ARequest,
  CALLER_HEADER,
  type DiscoverResponse,
  DomainError,
  INBOUND_TOKEN_HEADER,
} from "@molecule/contracts";
import { type WorkspaceRow, workspaces } from "@molecule/db";
import { eq } from "drizzle-orm";
import type { Agent, Dispatcher } from "undici";
import { callerOf } from "../http/auth.ts";
import type { Caller } from "../http/types.ts";
import { type A2ADirectory, type A2ARoute, databaseDirectory } from "./a2a-directory.ts";
import type { ActivityTracker } from "./activity.ts";
import {
  type AgentUrlPolicy,
  createAgentDispatcher,
  isAssignedAgentUrl,
  isPrivateAddressError,
  isPrivateHost,
  PRIVATE_ADDRESS_MESSAGE,
} from "./agent-url-policy.ts";
import type { PlatformDeps } from "./deps.ts";
import { openInboundToken } from "./inbound-token.ts";
import type { Credential } from "./tokens.ts";
import type { WorkspaceWaker } from "./wake.ts";

/** Who is on either end of an A2A call, as the rule table sees them. */
export type A2AParty = { kind: "admin"; orgId: string } | { kind: "workspace"; id: string; orgId: string };

export type RuleVerdict = "allow" | "deny" | undefined;
export interface A2ARule {
  name: string;
  /** `undefined` passes the decision to the next rule. */
  decide(caller: A2AParty, target: A2AParty & { kind: "workspace" }): RuleVerdict;
}

/**
 * Who may talk to whom, first decisive rule wins, no decision means deny. Change the policy here.
 * A workspace may not call itself through the platform (a loop that only burns its own budget), and nobody
 * reaches across organisations: the admin of this tenant reaches its own org only.
 */
export const A2A_RULES: readonly A2ARule[] = [
  { name: "no-self-call", decide: (c, t) => (c.kind === "workspace" && c.id === t.id ? "deny" : undefined) },
  { name: "same-org", decide: (c, t) => (c.orgId === t.orgId ? "allow" : "deny") },
];

export function mayTalk(
  caller: A2AParty,
  target: A2AParty & { kind: "workspace" },
  rules: readonly A2ARule[] = A2A_RULES,
): { allowed: boolean; rule: string } {
  for (const rule of rules) {
    const verdict = rule.decide(caller, target);
    if (verdict) return { allowed: verdict === "allow", rule: rule.name };
  }
  return { allowed: false, rule: "default-deny" };
}

/** Statuses that receive messages; any other live status answers 503 with Retry-After. */
const RECEIVING = new Set(["online", "degraded"]);
const GONE = new Set(["removing", "removed"]);
export const RETRY_AFTER_SECONDS = 30;

export interface A2ALimits {
  timeoutMs: number;
  maxRequestBytes: number;
  maxResponseBytes: number;
}

export function a2aLimits(deps: PlatformDeps): A2ALimits {
  return {
    timeoutMs: deps.settings.a2aTimeoutMs,
    maxRequestBytes: deps.settings.a2aMaxRequestBytes,
    maxResponseBytes: deps.settings.a2aMaxResponseBytes,
  };
}

/**
 * A proxied answer, ready for either HTTP layer to write: a JSON answer read whole (capped), or an event stream
 * passed through chunk by chunk (capped, with an idle timeout). `cancel` stops the stream (the client went away).
 */
export type A2AAnswer =
  | { kind: "json"; contentType: string; body: Uint8Array }
  | { kind: "stream"; contentType: string; chunks: AsyncIterable<Uint8Array>; cancel(): void };

/** The headers a streamed answer goes out with. */
export const STREAM_HEADERS = { "cache-control": "no-cache", "x-accel-buffering": "no" } as const;

interface Prepared {
  url: URL;
  /** Path and query, as the request line carries them. */
  path: string;
  assigned: boolean;
  inboundToken?: string | null;
}

/** Forwards JSON-RPC A2A requests from an authorised caller to a target workspace's registered URL. */
export class A2AService {
  private readonly dispatchers = new Map<string, Agent>();
  private readonly prepared = new WeakMap<A2ARoute, Prepared>();

  constructor(
    private readonly deps: PlatformDeps,
    readonly directory: A2ADirectory = databaseDirectory(deps),
    /** Wakes a suspended target and holds its requests until it is back; without one they are 503 at once. */
    private readonly waker: WorkspaceWaker | null = null,
    /** Records the message as activity of both ends (what keeps them from being suspended as idle). */
    private readonly activity: ActivityTracker | null = null,
  ) {}

  /**
   * The connect-time guard for a policy: one dispatcher (and its connection pool per origin) per policy, since
   * settings can change in tests and assigned addresses are dialled with private addresses allowed.
   */
  private agentFor(policy: AgentUrlPolicy): Agent {
    const key = `${policy.allowInsecure}/${policy.allowPrivate}`;
    let agent = this.dispatchers.get(key);
    if (!agent) {
      agent = createAgentDispatcher(policy, this.deps.resolveAgentHost);
      this.dispatchers.set(key, agent);
    }
    return agent;
  }

  /** What is derived from a route once and kept as long as the directory keeps the route. */
  private prepare(target: A2ARoute, targetUrl: string): Prepared {
    let prepared = this.prepared.get(target);
    if (!prepared) {
      const url = new URL(targetUrl);
      prepared = {
        url,
        path: `${url.pathname}${url.search}`,
        assigned: isAssignedAgentUrl(target, targetUrl),
      };
      this.prepared.set(target, prepared);
    }
    return prepared;
  }

  /** The target's inbound token, opened once per kept route (a value that does not open is never kept). */
  private inboundToken(target: A2ARoute, targetUrl: string): string | null {
    const prepared = this.prepare(target, targetUrl);
    if (prepared.inboundToken === undefined)
      prepared.inboundToken = openInboundToken(this.deps.sealer, target);
    return prepared.inboundToken;
  }

  /** Stops following the change feed. */
  close(): void {
    this.directory.close();
  }

  /** Who called, from the bearer token's credential (the admin, a workspace, or nobody), through the directory. */
  resolveCaller(credential: Credential | null): Promise<Caller | null> {
    return callerOf(this.deps, credential, (tokenHash) => this.directory.tokenOwner(tokenHash));
  }

  /** The target's route once the caller may reach it: 404 unknown or removed, 403 not allowed. */
  private async authoriseRoute(caller: Caller, targetId: string): Promise<A2ARoute> {
    const [target, own] = await Promise.all([
      this.directory.route(targetId),
      caller.kind === "workspace" ? this.directory.route(caller.workspaceId) : null,
    ]);
    if (!target || GONE.has(target.status))
      throw new DomainError("not_found", `workspace ${targetId} not found`);
    let party: A2AParty;
    if (caller.kind === "admin") {
      party = { kind: "admin", orgId: this.deps.settings.orgId };
    } else {
      if (!own || GONE.has(own.status))
        throw new DomainError("unauthorized", "the calling workspace is gone");
      party = { kind: "workspace", id: own.id, orgId: own.orgId };
    }
    const verdict = mayTalk(party, { kind: "workspace", id: target.id, orgId: target.orgId });
    if (!verdict.allowed) {
      throw new DomainError("forbidden", `not allowed to talk to workspace ${targetId}`, {
        rule: verdict.rule,
      });
    }
    return target;
  }

  /** The target row once the caller may reach it: 404 unknown or removed, 403 not allowed. */
  async authorise(caller: Caller, targetId: string): Promise<WorkspaceRow> {
    await this.authoriseRoute(caller, targetId);
    const [target] = await this.deps.db.select().from(workspaces).where(eq(workspaces.id, targetId));
    if (!target || GONE.has(target.status))
      throw new DomainError("not_found", `workspace ${targetId} not found`);
    return target;
  }

  /**
   * What an authorised caller may know about the target; its card as {@link proxiedCard} serves it (interfaces
   * pointing at `proxyUrl`), never the agent's own address.
   */
  async discover(caller: Caller, targetId: string, proxyUrl: string): Promise<DiscoverResponse> {
    const target = await this.authorise(caller, targetId);
    return {
      workspace_id: target.id,
      name: target.name,
      status: target.status,
      reachable: RECEIVING.has(target.status) && !!target.url,
      agent_card: target.agentCard ? proxiedCard(target.agentCard, proxyUrl) : null,
    };
  }

  /**
   * The target's registered agent card as a caller reaches it through this proxy (`proxyUrl`): its JSON-RPC
   * interfaces rewritten (see {@link proxiedCard}); 404 when the target registered none.
   */
  async proxiedCard(caller: Caller, targetId: string, proxyUrl: string): Promise<Record<string, unknown>> {
    const target = await this.authorise(caller, targetId);
    if (!target.agentCard)
      throw new DomainError("not_found", `workspace ${targetId} registered no agent card`);
    return proxiedCard(target.agentCard, proxyUrl);
  }

  /**
   * Sends the raw JSON-RPC body to the target and returns its answer, ready for the HTTP layer to write. The request
   * to the target is built here from scratch: none of the caller's headers (its token, or an
   * `x-molecule-inbound-token` of its own) is forwarded, except the `A2A-Version` it asked for (`version`). The
   * target's inbound token proves the request comes through this check; `x-molecule-caller` says who asked. Any
   * method is forwarded; whether the answer streams is the target's content type, not the method's name.
   * `callerGone` aborts when the caller's connection closes: a wait for a waking target then ends (`CallerGone`).
   */
  async forward(
    caller: Caller,
    targetId: string,
    request: A2ARequest,
    rawBody: string | Uint8Array,
    version?: string,
    callerGone?: AbortSignal,
  ): Promise<A2AAnswer> {
    let target = await this.authoriseRoute(caller, targetId);
    if (!RECEIVING.has(target.status) && this.waker && (await this.waker.shouldWait(target))) {
      target = await this.waker.untilReceiving(targetId, callerGone);
    }
    // Both ends are busy while the call is open (however long a stream runs), and were active when it ended.
    const release = this.activity?.hold(targetId, caller.kind === "workspace" ? caller.workspaceId : null);
    if (!release) return this.deliver(caller, target, request, rawBody, version);
    let answer: A2AAnswer;
    try {
      answer = await this.deliver(caller, target, request, rawBody, version);
    } catch (error) {
      release();
      throw error;
    }
    if (answer.kind === "json") {
      release();
      return answer;
    }
    const { chunks, cancel } = answer;
    return {
      ...answer,
      chunks: releasedAtEnd(chunks, release),
      cancel: () => {
        cancel();
        release();
      },
    };
  }

  private async deliver(
    caller: Caller,
    target: A2ARoute,
    request: A2ARequest,
    rawBody: string | Uint8Array,
    version: string | undefined,
  ): Promise<A2AAnswer> {
    const targetId = target.id;
    if (!RECEIVING.has(target.status) || !target.url) {
      throw new DomainError(
        "upstream_unavailable",
        target.url
          ? `workspace ${targetId} is ${target.status}; it receives messages only when online or degraded`
          : `workspace ${targetId} has not registered a URL`,
        { status: target.status, retryAfterSeconds: RETRY_AFTER_SECONDS },
      );
    }
    // The address the target's backend assigned it is dialled even on a private network (Fly's 6PN, a Docker
    // network, a VPC): the backend chose it. Any other URL is held to the policy, here and at connect time.
    const { url, path, assigned } = this.prepare(target, target.url);
    const policy: AgentUrlPolicy = {
      allowInsecure: this.deps.settings.allowInsecureAgentUrls,
      allowPrivate: assigned || this.deps.settings.allowPrivateAgentUrls,
    };
    // IP literals never reach the connect-time lookup, so a URL stored before the policy changed is checked here.
    if (!policy.allowPrivate && isPrivateHost(url.hostname)) {
      throw new DomainError("bad_gateway", PRIVATE_ADDRESS_MESSAGE, { workspaceId: targetId });
    }
    // Null for an agent registered before inbound tokens existed (it accepts calls without one). A value this process
    // cannot open (its key version is not configured) is a 503 secrets_key_unavailable: the agent is not called.
    const inboundToken = this.inboundToken(target, target.url);
    const limits = a2aLimits(this.deps);
    const started = performance.now();
    const callerName = caller.kind === "admin" ? "admin" : caller.workspaceId;
    const logger = this.deps.logger;
    const context = { a2a: { caller: callerName, target: targetId, method: request.method } };
    // A delivery is logged at debug: the request line (info) and the `a2a.delivery` event already record it.
    const log = (level: "debug" | "warn", fields: Record<string, unknown>, message: string) => {
      if (logger.isLevelEnabled(level)) logger[level]({ ...context, ...fields }, message);
    };

    // Metadata only: never the bodies.
    const delivered = (bytes: number, streamed: boolean) =>
      this.deps.events.publish({
        type: "a2a.delivery",
        workspaceId: targetId,
        data: { caller: callerName, method: request.method, durationMs: elapsed(started), bytes, streamed },
      });

    const controller = new AbortController();
    let timedOut = false;
    const expire = () => {
      timedOut = true;
      controller.abort();
    };
    let timer = setTimeout(expire, limits.timeoutMs);
    const armIdle = () => {
      clearTimeout(timer);
      timer = setTimeout(expire, limits.timeoutMs);
    };

    let upstream: Dispatcher.ResponseData;
    try {
      upstream = await this.agentFor(policy).request({
        origin: url.origin,
        path,
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          [CALLER_HEADER]: callerName,
          ...(inboundToken ? { [INBOUND_TOKEN_HEADER]: inboundToken } : {}),
          ...(version ? { [A2A_VERSION_HEADER]: version } : {}),
        },
        body: rawBody,
        signal: controller.signal,
      });
    } catch (err) {
      clearTimeout(timer);
      if (isPrivateAddressError(err)) {
        log("warn", { durationMs: elapsed(started) }, "a2a upstream refused: private address");
        throw new DomainError("bad_gateway", PRIVATE_ADDRESS_MESSAGE, { workspaceId: targetId });
      }
      log("warn", { durationMs: elapsed(started), timedOut, cause: causeCode(err) }, "a2a upstream failed");
      throw upstreamError(targetId, timedOut, limits.timeoutMs);
    }
    const body = upstream.body;

    if (upstream.statusCode < 200 || upstream.statusCode > 299) {
      clearTimeout(timer);
      discard(body);
      log(
        "warn",
        { durationMs: elapsed(started), upstreamStatus: upstream.statusCode },
        "a2a upstream refused",
      );
      throw new DomainError("bad_gateway", `workspace ${targetId} answered HTTP ${upstream.statusCode}`, {
        upstreamStatus: upstream.statusCode,
      });
    }
    const declared = Number(upstream.headers["content-length"]);
    if (Number.isFinite(declared) && declared > limits.maxResponseBytes) {
      clearTimeout(timer);
      discard(body);
      throw tooLarge(targetId, limits.maxResponseBytes);
    }

    const typeHeader = upstream.headers["content-type"];
    const type = (Array.isArray(typeHeader) ? typeHeader[0] : typeHeader) ?? "application/json";
    if (/^text\/event-stream\b/i.test(type)) {
      armIdle();
      async function* relay(): AsyncGenerator<Uint8Array> {
        let size = 0;
        let finished = false;
        try {
          for await (const chunk of body as AsyncIterable<Buffer>) {
            size += chunk.byteLength;
            if (size > limits.maxResponseBytes) {
              log("warn", { bytes: size }, "a2a stream exceeded the response cap");
              throw new Error("response cap exceeded");
            }
            armIdle();
            yield chunk;
          }
          finished = true;
          log("debug", { durationMs: elapsed(started), bytes: size }, "a2a stream done");
          delivered(size, true);
        } catch (err) {
          if (size <= limits.maxResponseBytes) {
            log("warn", { durationMs: elapsed(started), timedOut, bytes: size }, "a2a stream broke");
          }
          throw new Error("upstream stream failed", { cause: err });
        } finally {
          clearTimeout(timer);
          if (!finished) discard(body);
        }
      }
      return {
        kind: "stream",
        contentType: type,
        chunks: relay(),
        cancel: () => {
          clearTimeout(timer);
          controller.abort();
          discard(body);
        },
      };
    }

    // A JSON answer (also when a streaming method is answered with a plain JSON-RPC error).
    let bytes: Uint8Array;
    try {
      bytes = await readCapped(body, limits.maxResponseBytes);
    } catch (err) {
      log("warn", { durationMs: elapsed(started), timedOut, cause: causeCode(err) }, "a2a upstream failed");
      throw upstreamError(targetId, timedOut, limits.timeoutMs);
    } finally {
      clearTimeout(timer);
    }
    if (bytes === TOO_LARGE) throw tooLarge(targetId, limits.maxResponseBytes);
    log("debug", { durationMs: elapsed(started), bytes: bytes.byteLength }, "a2a delivered");
    delivered(bytes.byteLength, false);
    return { kind: "json", contentType: type, body: bytes };
  }
}

/**
 * `card` with every interface a client could dial pointed at `proxyUrl`, the only way in: A2A 1.0's
 * `supportedInterfaces` keep their JSON-RPC entries (with their protocol versions) and lose the others (gRPC, REST:
 * the proxy carries JSON-RPC only); A2A 0.3's `url`, `preferredTransport` and `additionalInterfaces` name the proxy's
 * JSON-RPC endpoint, also on a card that declares neither version's interfaces.
 */
export function proxiedCard(card: Record<string, unknown>, proxyUrl: string): Record<string, unknown> {
  const out: Record<string, unknown> = { ...card };
  const v1 = card.supportedInterfaces;
  if (Array.isArray(v1)) {
    out.supportedInterfaces = v1
      .filter(
        (entry) =>
          typeof entry === "object" && entry !== null && (entry.protocolBinding ?? "JSONRPC") === "JSONRPC",
      )
      .map((entry) => ({ ...entry, url: proxyUrl }));
  }
  if (!Array.isArray(v1) || "url" in card || "preferredTransport" in card || "additionalInterfaces" in card) {
    out.url = proxyUrl;
    out.preferredTransport = "JSONRPC";
    out.additionalInterfaces = [{ url: proxyUrl, transport: "JSONRPC" }];
  }
  return out;
}

/** `chunks`, calling `release` once they end, fail or are abandoned. */
async function* releasedAtEnd(
  chunks: AsyncIterable<Uint8Array>,
  release: () => void,
): AsyncGenerator<Uint8Array> {
  try {
    yield* chunks;
  } finally {
    release();
  }
}

const TOO_LARGE = new Uint8Array(0);

/** Drops an upstream body not (fully) read; its connection is closed, and the abort it reports is expected. */
function discard(body: Dispatcher.ResponseData["body"]): void {
  body.on("error", () => undefined);
  body.destroy();
}

/** The whole body, or TOO_LARGE (the rest unread, the connection dropped) once it passes `max` bytes. */
async function readCapped(body: AsyncIterable<Buffer>, max: number): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > max) return TOO_LARGE; // leaving the loop destroys the body
    chunks.push(chunk);
  }
  return chunks.length === 1 && chunks[0] ? chunks[0] : Buffer.concat(chunks, size);
}

function tooLarge(targetId: string, max: number): DomainError {
  return new DomainError("bad_gateway", `workspace ${targetId} answered more than ${max} bytes`);
}

function upstreamError(targetId: string, timedOut: boolean, timeoutMs: number): DomainError {
  return timedOut
    ? new DomainError("gateway_timeout", `workspace ${targetId} did not answer within ${timeoutMs} ms`)
    : new DomainError("bad_gateway", `workspace ${targetId} could not be reached`);
}

function causeCode(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: unknown } } | null)?.cause;
  return typeof cause?.code === "string" ? cause.code : (err as Error | null)?.name;
}

function elapsed(started: number): number {
  return Math.round(performance.now() - started);
}

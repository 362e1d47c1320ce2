import {
  A2A_STREAMING_METHODS,
  type A2ARequest,
  CALLER_HEADER,
  type DiscoverResponse,
  DomainError,
  INBOUND_TOKEN_HEADER,
} from "@molecule/contracts";
import { type WorkspaceRow, workspaces } from "@molecule/db";
import { eq } from "drizzle-orm";
import type { Agent } from "undici";
import { fetch as undiciFetch } from "undici";
import type { Caller } from "../http/types.ts";
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

/** Forwards JSON-RPC A2A requests from an authorised caller to a target workspace's registered URL. */
export class A2AService {
  private readonly dispatchers = new Map<string, Agent>();

  constructor(private readonly deps: PlatformDeps) {}

  /**
   * The connect-time guard for a policy: one dispatcher (and its connection pool) per policy, since settings can
   * change in tests and assigned addresses are dialled with private addresses allowed.
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

  /** The target row once the caller may reach it: 404 unknown or removed, 403 not allowed. */
  async authorise(caller: Caller, targetId: string): Promise<WorkspaceRow> {
    const [target] = await this.deps.db.select().from(workspaces).where(eq(workspaces.id, targetId));
    if (!target || GONE.has(target.status))
      throw new DomainError("not_found", `workspace ${targetId} not found`);
    let party: A2AParty;
    if (caller.kind === "admin") {
      party = { kind: "admin", orgId: this.deps.settings.orgId };
    } else {
      const [own] = await this.deps.db
        .select({ id: workspaces.id, orgId: workspaces.orgId, status: workspaces.status })
        .from(workspaces)
        .where(eq(workspaces.id, caller.workspaceId));
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

  async discover(caller: Caller, targetId: string): Promise<DiscoverResponse> {
    const target = await this.authorise(caller, targetId);
    return {
      workspace_id: target.id,
      name: target.name,
      status: target.status,
      reachable: RECEIVING.has(target.status) && !!target.url,
      agent_card: target.agentCard ?? null,
    };
  }

  /**
   * Sends the raw JSON-RPC body to the target and returns the upstream response, ready to hand to the client:
   * JSON answers are read whole (capped); event streams are passed through chunk by chunk, capped and with an
   * idle timeout. The request to the target is built here from scratch: none of the caller's headers (its token, or
   * an `x-molecule-inbound-token` of its own) is forwarded. The target's inbound token proves the request comes
   * through this check; `x-molecule-caller` says who asked.
   */
  async forward(caller: Caller, targetId: string, request: A2ARequest, rawBody: string): Promise<Response> {
    const target = await this.authorise(caller, targetId);
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
    const assigned = isAssignedAgentUrl(target, target.url);
    const policy: AgentUrlPolicy = {
      allowInsecure: this.deps.settings.allowInsecureAgentUrls,
      allowPrivate: assigned || this.deps.settings.allowPrivateAgentUrls,
    };
    // IP literals never reach the connect-time lookup, so a URL stored before the policy changed is checked here.
    if (!policy.allowPrivate && isPrivateHost(new URL(target.url).hostname)) {
      throw new DomainError("bad_gateway", PRIVATE_ADDRESS_MESSAGE, { workspaceId: targetId });
    }
    // Null for an agent registered before inbound tokens existed (it accepts calls without one). A value this process
    // cannot open (its key version is not configured) is a 503 secrets_key_unavailable: the agent is not called.
    const inboundToken = openInboundToken(this.deps.sealer, target);
    const limits = a2aLimits(this.deps);
    const streaming = A2A_STREAMING_METHODS.includes(request.method);
    const started = performance.now();
    const log = this.deps.logger.child({
      a2a: {
        caller: caller.kind === "admin" ? "admin" : caller.workspaceId,
        target: targetId,
        method: request.method,
      },
    });

    // Metadata only: never the bodies.
    const delivered = (bytes: number, streamed: boolean) =>
      this.deps.events.publish({
        type: "a2a.delivery",
        workspaceId: targetId,
        data: {
          caller: caller.kind === "admin" ? "admin" : caller.workspaceId,
          method: request.method,
          durationMs: elapsed(started),
          bytes,
          streamed,
        },
      });

    const controller = new AbortController();
    let timedOut = false;
    let timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, limits.timeoutMs);
    const armIdle = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, limits.timeoutMs);
    };

    let upstream: Response;
    try {
      upstream = (await undiciFetch(target.url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: streaming ? "text/event-stream, application/json" : "application/json",
          [CALLER_HEADER]: caller.kind === "admin" ? "admin" : caller.workspaceId,
          ...(inboundToken ? { [INBOUND_TOKEN_HEADER]: inboundToken } : {}),
        },
        body: rawBody,
        redirect: "manual",
        signal: controller.signal,
        dispatcher: this.agentFor(policy),
      })) as unknown as Response;
    } catch (err) {
      clearTimeout(timer);
      if (isPrivateAddressError(err)) {
        log.warn({ durationMs: elapsed(started) }, "a2a upstream refused: private address");
        throw new DomainError("bad_gateway", PRIVATE_ADDRESS_MESSAGE, { workspaceId: targetId });
      }
      log.warn({ durationMs: elapsed(started), timedOut, cause: causeCode(err) }, "a2a upstream failed");
      throw upstreamError(targetId, timedOut, limits.timeoutMs);
    }

    if (upstream.status < 200 || upstream.status > 299) {
      clearTimeout(timer);
      await upstream.body?.cancel().catch(() => undefined);
      log.warn({ durationMs: elapsed(started), upstreamStatus: upstream.status }, "a2a upstream refused");
      throw new DomainError("bad_gateway", `workspace ${targetId} answered HTTP ${upstream.status}`, {
        upstreamStatus: upstream.status,
      });
    }
    const declared = Number(upstream.headers.get("content-length"));
    if (Number.isFinite(declared) && declared > limits.maxResponseBytes) {
      clearTimeout(timer);
      await upstream.body?.cancel().catch(() => undefined);
      throw tooLarge(targetId, limits.maxResponseBytes);
    }

    const type = upstream.headers.get("content-type") ?? "application/json";
    if (streaming && /^text\/event-stream\b/i.test(type) && upstream.body) {
      armIdle();
      const reader = upstream.body.getReader();
      let size = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(out) {
          let chunk: Awaited<ReturnType<typeof reader.read>>;
          try {
            chunk = await reader.read();
          } catch {
            clearTimeout(timer);
            log.warn({ durationMs: elapsed(started), timedOut, bytes: size }, "a2a stream broke");
            out.error(new Error("upstream stream failed"));
            return;
          }
          if (chunk.done) {
            clearTimeout(timer);
            log.info({ durationMs: elapsed(started), bytes: size }, "a2a stream done");
            delivered(size, true);
            out.close();
            return;
          }
          size += chunk.value.byteLength;
          if (size > limits.maxResponseBytes) {
            clearTimeout(timer);
            log.warn({ bytes: size }, "a2a stream exceeded the response cap");
            await reader.cancel().catch(() => undefined);
            out.error(new Error("response cap exceeded"));
            return;
          }
          armIdle();
          out.enqueue(chunk.value);
        },
        async cancel() {
          clearTimeout(timer);
          await reader.cancel().catch(() => undefined);
        },
      });
      return new Response(body, {
        status: 200,
        headers: { "content-type": type, "cache-control": "no-cache", "x-accel-buffering": "no" },
      });
    }

    // A JSON answer (also when a streaming method is answered with a plain JSON-RPC error).
    let bytes: Uint8Array;
    try {
      bytes = await readCapped(upstream, limits.maxResponseBytes);
    } catch (err) {
      log.warn({ durationMs: elapsed(started), timedOut, cause: causeCode(err) }, "a2a upstream failed");
      if (err instanceof DomainError) throw err;
      throw upstreamError(targetId, timedOut, limits.timeoutMs);
    } finally {
      clearTimeout(timer);
    }
    if (bytes === TOO_LARGE) throw tooLarge(targetId, limits.maxResponseBytes);
    log.info({ durationMs: elapsed(started), bytes: bytes.byteLength }, "a2a delivered");
    delivered(bytes.byteLength, false);
    return new Response(bytes, { status: 200, headers: { "content-type": type } });
  }
}

const TOO_LARGE = new Uint8Array(0);

async function readCapped(response: Response, max: number): Promise<Uint8Array> {
  if (!response.body) return new Uint8Array(0);
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => undefined);
      return TOO_LARGE;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
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

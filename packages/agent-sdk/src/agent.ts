/**
 * `runAgent`: everything a workspace agent needs beside its own logic. It starts the A2A server, obtains an auth
 * token (explicit, stored, or by registering with the boot token — retried while the platform is not up yet),
 * takes the workspace's secrets from the register answer or pulls them once, heartbeats until stopped, and shuts
 * down cleanly when `signal` aborts.
 *
 * The A2A server answers JSON-RPC only to the platform's proxy: until the credentials are in hand it answers 503, then
 * 401 to any request without the inbound token that came with the auth token. From a platform that issues no inbound
 * token it serves anyone, and says so in a warning.
 */

import { cardFor } from "./a2a-card.ts";
import type { HandlerAnswer, MessageContext } from "./a2a-handler.ts";
import type { A2AMessage } from "./a2a-protocol.ts";
import { type InboundAuth, type StartedA2AServer, startA2AServer } from "./a2a-server.ts";
import { backoffDelay, sleep as realSleep, type Sleep } from "./backoff.ts";
import {
  type AgentCard,
  type FetchLike,
  type HeartbeatBody,
  PlatformClient,
  PlatformError,
} from "./client.ts";
import {
  CredentialManager,
  type CredentialSource,
  CredentialStore,
  CredentialsError,
} from "./credentials.ts";
import { DEFAULT_HEARTBEAT_INTERVAL_MS, runHeartbeatLoop } from "./heartbeat.ts";
import { errorFields, type Logger, silentLogger } from "./log.ts";
import { waitForClaim } from "./pool-claim.ts";
import { WorkTracker } from "./work-tracker.ts";

export interface AgentMessageContext extends MessageContext {
  /** The workspace's secrets; empty until they have been pulled (start-up). */
  secrets: Readonly<Record<string, string>>;
}

/** A whole reply, or its pieces as they become ready; see `MessageHandler`. */
export type AgentMessageHandler = (
  message: A2AMessage,
  context: AgentMessageContext,
) => HandlerAnswer | Promise<HandlerAnswer>;

export interface RunAgentOptions {
  platformUrl: string;
  workspaceId: string;
  /** One-time token from provisioning; needed unless an auth token is given or stored. */
  bootToken?: string;
  /**
   * A warm pool member's token (`WORKSPACE_POOL_TOKEN`): with no boot token and nothing stored, the agent waits for a
   * create to claim it and registers with the boot token the claim brings (see `pool-claim.ts`).
   */
  poolToken?: string;
  /** Called when a pool member's claim arrives: the name and metadata the workspace was created with. */
  onClaimed?: (claim: { name: string; metadata: Record<string, unknown> }) => void;
  /** An auth token obtained elsewhere; used before the stored one. */
  authToken?: string;
  /** The inbound token from the same register answer as `authToken`; without it the agent serves anyone. */
  inboundToken?: string;
  /** Where the auth token is persisted (see `defaultStateDir`); null keeps it in memory only. */
  stateDir: string | null;
  /**
   * 0 picks a free port (the one remembered in `stateDir` from the last run when it is still free, since the
   * registered URL cannot change without a new boot token); the registered URL carries the real port.
   */
  port: number;
  host: string;
  /** The URL the platform reaches the agent at. Default `http://127.0.0.1:<real port>`; null registers no URL. */
  publicUrl?: string | null;
  card: AgentCard;
  onMessage: AgentMessageHandler;
  heartbeatIntervalMs?: number;
  /**
   * What each heartbeat reports. `active: true` is added while a message is being answered (a streamed reply, a task
   * running on) and in the first heartbeat after, so an idle-suspending platform does not suspend the agent mid-work;
   * report it here for work of the agent's own (a scheduled job).
   */
  health?: () => HeartbeatBody | Promise<HeartbeatBody>;
  signal: AbortSignal;
  log?: Logger;
  fetch?: FetchLike;
  maxBodyBytes?: number;
  /** Backoff for register and secrets retries (default 500 ms → 30 s) and for failed heartbeats (1 s → 60 s). */
  retry?: { baseMs: number; maxMs: number };
  heartbeatBackoff?: { baseMs: number; maxMs: number };
  sleep?: Sleep;
  /** Called once the server listens (before credentials). */
  onListening?: (info: { port: number; url: string | null }) => void;
  /** Called once credentials and secrets are in hand and the heartbeat loop runs. */
  onReady?: (info: AgentReadyInfo) => void;
}

export interface AgentReadyInfo {
  port: number;
  url: string | null;
  credentialSource: CredentialSource;
  /** "inbound_token": JSON-RPC only through the platform's proxy; "open": anyone who reaches the port. */
  a2aAuth: "inbound_token" | "open";
  secrets: Readonly<Record<string, string>>;
}

export type AgentStop = { reason: "signal" } | { reason: "removed" };

/**
 * Runs the agent until `signal` aborts (resolves `{reason: "signal"}`) or the platform says the workspace is gone
 * (`{reason: "removed"}`). Rejects with `CredentialsError` when no valid token can be had (a person must act), or
 * with the error that stopped the server from listening.
 */
export async function runAgent(options: RunAgentOptions): Promise<AgentStop> {
  const { signal } = options;
  const log = options.log ?? silentLogger;
  const sleep = options.sleep ?? realSleep;
  const retry = options.retry ?? { baseMs: 500, maxMs: 30_000 };
  let secrets: Readonly<Record<string, string>> = Object.freeze({});
  let publicUrl: string | null = null;

  const card = (): AgentCard => ({
    protocolVersion: "0.3.0",
    capabilities: { streaming: true, pushNotifications: false },
    defaultInputModes: ["text/plain"],
    defaultOutputModes: ["text/plain"],
    skills: [],
    ...options.card,
    name: options.card.name ?? options.workspaceId,
    ...((options.card.url ?? publicUrl) ? { url: options.card.url ?? publicUrl ?? undefined } : {}),
  });

  /** What the platform keeps and shows callers: the card as 0.3 clients read it, with 1.0's interfaces beside. */
  const registeredCard = (): AgentCard => {
    const served = card();
    return typeof served.url === "string" ? (cardFor(served, served.url, "0.3") as AgentCard) : served;
  };

  const store = options.stateDir === null ? null : new CredentialStore(options.stateDir);
  let current: CredentialManager | null = null;
  // Asked on every request: pending until the first token, and again while a rejected one is being replaced.
  const inbound = (): InboundAuth => {
    if (!current?.token) return "pending";
    const token = current.inboundToken;
    return token ? { token } : "open";
  };
  // Work that outlives its message (a stream, a task) is reported in the heartbeats as `active`.
  const work = new WorkTracker();
  const serverOptions = {
    host: options.host,
    maxBodyBytes: options.maxBodyBytes,
    card,
    inbound,
    log,
    onMessage: work.wrap((message: A2AMessage, context: MessageContext) =>
      options.onMessage(message, { ...context, secrets }),
    ),
  };
  // With port 0, come back on the port used last time: the registered URL only changes by registering again.
  const previousPort = options.port === 0 && store ? await store.loadPort(options.workspaceId) : null;
  let server: StartedA2AServer;
  let portMoved = false;
  try {
    server = await startA2AServer({ ...serverOptions, port: previousPort ?? options.port });
  } catch (err) {
    if (previousPort === null || (err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
    log("warn", "previous_port_taken", { port: previousPort });
    portMoved = true;
    server = await startA2AServer({ ...serverOptions, port: 0 });
  }
  // Written while the agent registers; waited for before it reports ready.
  const portSaved =
    options.port === 0 && store && server.port !== previousPort
      ? store.savePort(options.workspaceId, server.port).catch((err: unknown) => {
          log("warn", "port_not_persisted", errorFields(err));
        })
      : Promise.resolve();
  publicUrl = options.publicUrl === undefined ? `http://127.0.0.1:${server.port}` : options.publicUrl;
  log("info", "a2a_listening", { host: options.host, port: server.port, url: publicUrl });
  options.onListening?.({ port: server.port, url: publicUrl });

  try {
    const client = new PlatformClient({
      platformUrl: options.platformUrl,
      workspaceId: options.workspaceId,
      fetch: options.fetch,
    });
    let bootToken = options.bootToken;
    if (bootToken === undefined && options.authToken === undefined && options.poolToken) {
      // Stored credentials mean this member was claimed and registered before a restart: they are used as they are.
      const stored = store ? await store.load(options.workspaceId).catch(() => null) : null;
      if (!stored) {
        const outcome = await waitForClaim(client, options.poolToken, { signal, retry, sleep, log });
        if ("removed" in outcome) return { reason: "removed" };
        bootToken = outcome.claim.bootToken;
        options.onClaimed?.({ name: outcome.claim.name, metadata: outcome.claim.metadata });
      }
    }
    const credentials = new CredentialManager({
      client,
      store,
      bootToken,
      authToken: options.authToken,
      inboundToken: options.inboundToken,
      registration: () => ({ url: publicUrl, agentCard: registeredCard() }),
      retry,
      sleep,
      log,
    });
    current = credentials;

    await credentials.acquire(signal, { persistInBackground: true });
    if (!credentials.inboundToken) {
      log("warn", "a2a_open", {
        reason: `no inbound token came with the ${credentials.source} auth token; anyone who reaches the port can call this agent`,
      });
    }
    if (portMoved && credentials.source !== "registered") {
      // Only a new registration (new boot token) can tell the platform the new URL.
      log("warn", "registered_url_stale", { url: publicUrl });
    }
    // A registration with the boot token answers with the secrets (one request fewer); otherwise they are pulled.
    const registered = credentials.takeRegistration();
    if (registered?.secrets) {
      secrets = Object.freeze({ ...registered.secrets });
      // Names are not secret, but the count says enough.
      log("info", "secrets_loaded", { count: Object.keys(secrets).length, from: "registration" });
    }
    for (let attempt = 1; !registered?.secrets; attempt++) {
      try {
        secrets = Object.freeze(
          await credentials.withToken(signal, (token) => client.pullSecrets(token, { signal })),
        );
        log("info", "secrets_loaded", { count: Object.keys(secrets).length });
        break;
      } catch (err) {
        signal.throwIfAborted();
        if (err instanceof PlatformError && err.workspaceGone) {
          log("warn", "workspace_removed", { status: err.status });
          return { reason: "removed" };
        }
        if (!(err instanceof PlatformError) || !err.retryable) throw err;
        const delayMs = backoffDelay(attempt, retry);
        log("warn", "secrets_retry", { attempt, delayMs, ...errorFields(err) });
        await sleep(delayMs, signal);
      }
    }

    await Promise.all([portSaved, credentials.persisted()]);
    // A registration that came back `online` counted as the first heartbeat: the next one is due an interval later.
    const heartbeatIntervalMs = options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
    const advisedMs = (registered?.heartbeatIntervalSeconds ?? Number.POSITIVE_INFINITY) * 1000;
    const heartbeat = runHeartbeatLoop({
      firstBeatInMs: registered?.status === "online" ? Math.min(heartbeatIntervalMs, advisedMs) : 0,
      client,
      token: () => credentials.token ?? "",
      onUnauthorized: (s) => credentials.renew(s),
      health: async () => work.report(options.health ? await options.health() : {}),
      signal,
      intervalMs: options.heartbeatIntervalMs,
      backoff: options.heartbeatBackoff,
      sleep,
      log,
    });
    const source = credentials.source ?? "registered";
    const a2aAuth = credentials.inboundToken ? "inbound_token" : "open";
    log("info", "agent_ready", { port: server.port, url: publicUrl, authSource: source, a2aAuth });
    options.onReady?.({ port: server.port, url: publicUrl, credentialSource: source, a2aAuth, secrets });

    const stop = await heartbeat;
    if (stop.reason === "unauthorized") {
      throw stop.error instanceof CredentialsError
        ? stop.error
        : new CredentialsError("token_rejected", "the platform rejected the auth token", {
            cause: stop.error,
          });
    }
    return stop.reason === "removed" ? { reason: "removed" } : { reason: "signal" };
  } catch (err) {
    if (signal.aborted) return { reason: "signal" };
    log("error", "agent_failed", errorFields(err));
    throw err;
  } finally {
    // Never reject; a write under way ends before the agent does.
    await Promise.all([portSaved, current?.persisted()]);
    log("info", "agent_stopping", {});
    await server.close();
    log("info", "agent_stopped", {});
  }
}

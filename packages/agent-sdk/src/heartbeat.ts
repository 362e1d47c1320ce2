/**
 * The heartbeat loop: one heartbeat at once (or after `firstBeatInMs`), then one every `intervalMs` (30 s), or more often when the platform's
 * answer asks for it (`heartbeat_interval_seconds`: it marks a workspace offline after three silent intervals, so a
 * slower agent would flap). Failures back off exponentially with jitter (1 s doubling, capped at 60 s); a rejected
 * token is renewed once through `onUnauthorized`; 404/410 (workspace removed) ends the loop. Time is injected
 * through `sleep`, so tests need no real waiting.
 */
import { backoffDelay, sleep as realSleep, type Sleep } from "./backoff.ts";
import { type HeartbeatBody, type HeartbeatResult, type PlatformClient, PlatformError } from "./client.ts";
import { errorFields, type Logger, silentLogger } from "./log.ts";

export const DEFAULT_HEARTBEAT_INTERVAL_MS = 30_000;

export interface HeartbeatLoopOptions {
  client: Pick<PlatformClient, "heartbeat">;
  /** The current auth token. */
  token: () => string;
  /** Called when the platform answers 401; returns a new token or throws to end the loop. */
  onUnauthorized?: (signal: AbortSignal) => Promise<string>;
  /**
   * What each heartbeat reports (status ok/degraded and a detail; `active: true` when the agent worked since the last
   * beat without an A2A message through the platform, which keeps an idle-suspending platform from suspending it).
   * Default: nothing (the platform assumes ok, not active).
   */
  health?: () => HeartbeatBody | Promise<HeartbeatBody>;
  signal: AbortSignal;
  /** The longest wait between heartbeats; a shorter interval the platform asks for wins. */
  intervalMs?: number;
  /**
   * How long to wait before the first heartbeat (default 0: at once). A registration the platform counted as the
   * first heartbeat (its answer said `online`) lets the loop start one interval later.
   */
  firstBeatInMs?: number;
  backoff?: { baseMs: number; maxMs: number };
  sleep?: Sleep;
  random?: () => number;
  log?: Logger;
  /** Called after every successful heartbeat. */
  onBeat?: (result: HeartbeatResult) => void;
}

export type HeartbeatStop =
  | { reason: "aborted" }
  | { reason: "removed"; status: number }
  | { reason: "unauthorized"; error: unknown };

/** Runs until the signal aborts, the workspace is removed, or the token is rejected beyond renewal. Never rejects. */
export async function runHeartbeatLoop(options: HeartbeatLoopOptions): Promise<HeartbeatStop> {
  const { client, signal } = options;
  const intervalMs = options.intervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
  const backoff = options.backoff ?? { baseMs: 1_000, maxMs: 60_000 };
  const sleep = options.sleep ?? realSleep;
  const log = options.log ?? silentLogger;
  let failures = 0;
  let lastStatus: string | null = null;
  let renewedSinceSuccess = false;
  let advisedMs: number | undefined;

  if (options.firstBeatInMs) await sleep(options.firstBeatInMs, signal);
  while (!signal.aborted) {
    let delayMs = intervalMs;
    try {
      const body = options.health ? await options.health() : {};
      const result = await client.heartbeat(options.token(), body, { signal });
      if (failures > 0 || result.status !== lastStatus) {
        log("info", "heartbeat_ok", {
          status: result.status,
          ...(failures > 0 ? { afterFailures: failures } : {}),
        });
      }
      failures = 0;
      renewedSinceSuccess = false;
      lastStatus = result.status;
      const advised =
        result.heartbeatIntervalSeconds === undefined ? undefined : result.heartbeatIntervalSeconds * 1000;
      if (advised !== advisedMs) {
        advisedMs = advised;
        if (advised !== undefined && advised < intervalMs) {
          log("info", "heartbeat_interval_from_platform", { intervalMs: advised, configuredMs: intervalMs });
        }
      }
      delayMs = advisedMs === undefined ? intervalMs : Math.min(intervalMs, advisedMs);
      options.onBeat?.(result);
    } catch (err) {
      if (signal.aborted) break;
      if (err instanceof PlatformError && err.workspaceGone) {
        log("warn", "heartbeat_stopped_workspace_removed", { status: err.status });
        return { reason: "removed", status: err.status ?? 410 };
      }
      if (err instanceof PlatformError && err.unauthorized) {
        if (!options.onUnauthorized || renewedSinceSuccess) {
          log("error", "heartbeat_stopped_unauthorized", errorFields(err));
          return { reason: "unauthorized", error: err };
        }
        try {
          renewedSinceSuccess = true;
          await options.onUnauthorized(signal);
          continue; // heartbeat again at once with the new token
        } catch (renewError) {
          if (signal.aborted) break;
          log("error", "heartbeat_stopped_unauthorized", errorFields(renewError));
          return { reason: "unauthorized", error: renewError };
        }
      }
      failures += 1;
      delayMs = backoffDelay(failures, { ...backoff, random: options.random });
      log("warn", "heartbeat_failed", { attempt: failures, retryInMs: delayMs, ...errorFields(err) });
    }
    await sleep(delayMs, signal);
  }
  return { reason: "aborted" };
}

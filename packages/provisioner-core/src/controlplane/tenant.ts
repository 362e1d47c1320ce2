/**
 * The tenant platform's start-up calls to the control plane: its runtime configuration and its boot events. Both go
 * through the same signed client as the workspace calls.
 */
import { type BootEventBody, backoffDelay, TenantRuntimeConfig } from "@molecule/contracts";
import { ProvisionerError } from "../errors.ts";
import { abortableSleep, type ControlPlaneClient, type CpLogger, newIdempotencyKey } from "./client.ts";

export interface FetchTenantConfigOptions {
  /** Give up after this long without an answer (default 60 s). */
  waitMs?: number;
  /** First delay between tries; doubles up to `maxDelayMs` (defaults 250 ms and 5 s). */
  baseDelayMs?: number;
  maxDelayMs?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Jitter source for the waits (default Math.random). */
  random?: () => number;
  logger?: CpLogger;
}

/** The control plane could not be reached in time, or refused; the message is one line for an operator. */
export class ControlPlaneUnreachableError extends Error {
  constructor(
    message: string,
    /** true when the control plane answered (so boot events can still be posted). */
    readonly reachable: boolean,
  ) {
    super(message);
    this.name = "ControlPlaneUnreachableError";
  }
}

/**
 * GET /cp/tenants/config, tried again with backoff while the control plane is down or answers 5xx/429 (it may be
 * starting alongside this tenant), up to `waitMs`. A refusal (401, 404, …) ends at once: waiting would not fix it.
 */
export async function fetchTenantConfig(
  client: ControlPlaneClient,
  options: FetchTenantConfigOptions = {},
): Promise<TenantRuntimeConfig> {
  const now = options.now ?? Date.now;
  const sleep = options.sleep ?? ((ms: number) => abortableSleep(ms));
  const waitMs = options.waitMs ?? 60_000;
  const deadline = now() + waitMs;
  const backoff = {
    baseMs: options.baseDelayMs ?? 250,
    maxMs: options.maxDelayMs ?? 5_000,
    random: options.random ?? Math.random,
  };
  let tries = 0;
  for (;;) {
    tries += 1;
    try {
      const reply = await client.call({
        op: "tenant config",
        method: "GET",
        path: "/cp/tenants/config",
        maxAttempts: 1,
      });
      const parsed = TenantRuntimeConfig.safeParse(reply.body);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new ControlPlaneUnreachableError(
          `the control plane at ${client.baseUrl} answered GET /cp/tenants/config with an unexpected body (${issue?.path.join(".")}: ${issue?.message})`,
          true,
        );
      }
      return parsed.data;
    } catch (error) {
      if (error instanceof ControlPlaneUnreachableError) throw error;
      if (!(error instanceof ProvisionerError)) throw error;
      if (!error.retryable) {
        throw new ControlPlaneUnreachableError(
          `the control plane refused GET /cp/tenants/config: ${error.message}`,
          true,
        );
      }
      const remaining = deadline - now();
      if (remaining <= 0) {
        throw new ControlPlaneUnreachableError(
          `the control plane at ${client.baseUrl} did not answer GET /cp/tenants/config within ${Math.round(waitMs / 1000)} s (${tries} tries; last: ${error.message})`,
          false,
        );
      }
      const retryAfter =
        typeof error.details.retryAfterMs === "number" ? error.details.retryAfterMs : undefined;
      const wait = Math.min(remaining, retryAfter ?? backoffDelay(tries, backoff));
      options.logger?.warn(
        { attempt: tries, delayMs: wait, error: error.message },
        "control plane not answering yet; trying again",
      );
      await sleep(wait);
    }
  }
}

/**
 * POST /cp/tenants/boot-event. Never throws: a boot event is information for the control plane, and failing to
 * deliver one must not stop the tenant; the failure is logged.
 */
export async function postBootEvent(
  client: ControlPlaneClient,
  event: BootEventBody,
  logger?: CpLogger,
): Promise<boolean> {
  try {
    await client.call({
      op: "boot event",
      method: "POST",
      path: "/cp/tenants/boot-event",
      idempotencyKey: newIdempotencyKey(),
      body: {
        stage: event.stage,
        ...(event.detail === undefined ? {} : { detail: event.detail.slice(0, 1000) }),
        ...(event.image === undefined ? {} : { image: event.image }),
      },
      maxAttempts: 3,
    });
    return true;
  } catch (error) {
    logger?.warn(
      { stage: event.stage, error: error instanceof Error ? error.message : String(error) },
      "could not post boot event to the control plane",
    );
    return false;
  }
}

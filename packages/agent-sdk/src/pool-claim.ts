/**
 * A warm pool member's agent, before it is anyone's: started with a pool token (`WORKSPACE_POOL_TOKEN`) instead of a
 * boot token, it waits on the platform until a create claims it, then registers with the boot token the claim
 * brings, as any workspace does.
 */
import { backoffDelay, type Sleep } from "./backoff.ts";
import { type PlatformClient, PlatformError, type PoolClaim } from "./client.ts";
import { errorFields, type Logger } from "./log.ts";

/** How long each wait is held on the platform before it answers "nothing yet" and the agent asks again. */
export const CLAIM_WAIT_SECONDS = 20;

export type ClaimOutcome = { claim: PoolClaim } | { removed: true };

/**
 * Waits for the claim until `signal` aborts (rejects with the abort). Transient failures (network, 5xx) are retried
 * with backoff; `{removed: true}` when the platform removed the member from its pool (404). A refused pool token
 * (401) is thrown: nothing the agent does can fix it.
 */
export async function waitForClaim(
  client: Pick<PlatformClient, "awaitClaim">,
  poolToken: string,
  options: { signal: AbortSignal; retry: { baseMs: number; maxMs: number }; sleep: Sleep; log: Logger },
): Promise<ClaimOutcome> {
  const { signal, retry, sleep, log } = options;
  log("info", "pool_waiting", {});
  for (let failures = 0; ; ) {
    signal.throwIfAborted();
    try {
      const claim = await client.awaitClaim(poolToken, CLAIM_WAIT_SECONDS, { signal });
      failures = 0;
      if (claim) {
        log("info", "pool_claimed", { workspaceId: claim.workspaceId });
        return { claim };
      }
    } catch (err) {
      signal.throwIfAborted();
      if (err instanceof PlatformError && err.workspaceGone) {
        log("warn", "pool_member_removed", { status: err.status });
        return { removed: true };
      }
      if (!(err instanceof PlatformError) || !err.retryable) throw err;
      failures++;
      const delayMs = backoffDelay(failures, retry);
      log("warn", "pool_wait_retry", { attempt: failures, delayMs, ...errorFields(err) });
      await sleep(delayMs, signal);
    }
  }
}

/**
 * The backoff policy (from contracts, where every retry loop in the repository takes it) and an abortable sleep,
 * shared by the register retry and the heartbeat loop.
 */
export { type BackoffOptions, backoffDelay } from "@molecule/contracts/backoff";

/** Waits `ms`, or less when `signal` aborts; never rejects. */
export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

export const sleep: Sleep = (ms, signal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });

import { backoffDelay } from "@molecule/contracts";
import type { Logger } from "pino";

const RETRY_BASE_MS = 1_000;
const RETRY_MAX_MS = 30_000;

export interface WorkLoopOptions<T> {
  /** Takes the next item this process may run (a claimed row), or null when there is none. */
  claim: () => Promise<T | null>;
  /** Runs one claimed item to its end, recording its outcome itself. */
  execute: (item: T) => Promise<void>;
  logger: Logger;
  /** How long the loop sleeps after finding nothing to claim. */
  pollIntervalMs: number;
  /** Names the loop in its log line. */
  name: string;
  /** Items the background loop runs side by side. */
  maxConcurrent?: number;
}

/**
 * Polls for work and runs it in the background: claims items until there is none left (or `maxConcurrent` run at
 * once), then sleeps `pollIntervalMs`. A wake while a pass is under way schedules one more pass right after it, and
 * every finished item wakes the loop, so a freed slot is filled at once. `stop` waits for the running items.
 */
export class WorkLoop<T> {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private wakeRequested = false;
  private stopped = true;
  private readonly executing = new Set<Promise<void>>();
  private readonly maxConcurrent: number;

  constructor(private readonly options: WorkLoopOptions<T>) {
    this.maxConcurrent = options.maxConcurrent ?? 8;
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  /** Called when new work was queued, so it starts now rather than at the next poll. */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.wakeRequested = true;
      return;
    }
    this.schedule(0);
  }

  /**
   * Runs an item `claim` takes outside the loop's own search (a claim of one known item, say), beside the others, when
   * the loop is started and has a free slot; otherwise, or when `claim` takes nothing, wakes the loop as `wake` does.
   * `stop` waits for it like for any running item. Resolves with what `claim` took (null: nothing) once it has.
   */
  offer(claim: () => Promise<T | null>): Promise<T | null> {
    if (this.stopped || this.executing.size >= this.maxConcurrent) {
      this.wake();
      return Promise.resolve(null);
    }
    const taken = claim().catch((error: unknown) => {
      this.options.logger.error({ err: error }, `${this.options.name} claim failed; the loop looks instead`);
      return null;
    });
    // Whatever happens, its end wakes the loop (see `track`): what was not taken is looked for there.
    this.track(taken.then((claimed) => (claimed ? this.options.execute(claimed) : undefined)));
    return taken;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
    await Promise.allSettled([...this.executing]);
  }

  /** Runs claimable items one by one until none is left; returns how many ran. Tests call it directly. */
  async drain(): Promise<number> {
    let count = 0;
    for (;;) {
      const claimed = await this.options.claim();
      if (!claimed) return count;
      await this.options.execute(claimed);
      count++;
    }
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.running = this.loop().finally(() => {
        this.running = null;
        const again = this.wakeRequested;
        this.wakeRequested = false;
        this.schedule(again ? 0 : this.options.pollIntervalMs);
      });
    }, delayMs);
  }

  /** Counts a running item until it ends, then wakes the loop to fill its slot. */
  private track(work: Promise<void>): void {
    const execution = work.finally(() => {
      this.executing.delete(execution);
      this.wake();
    });
    this.executing.add(execution);
  }

  private async loop(): Promise<void> {
    try {
      while (!this.stopped) {
        const claimed = await this.options.claim();
        if (!claimed) return;
        // Items run side by side; one slow item does not hold up the rest.
        this.track(this.options.execute(claimed));
        if (this.executing.size >= this.maxConcurrent) return;
      }
    } catch (error) {
      this.options.logger.error(
        { err: error },
        `${this.options.name} loop failed; retrying at the next poll`,
      );
    }
  }
}

/**
 * Keeps a claimed row's lease alive: calls `renew` every third of the lease (at least 250 ms apart) until the
 * returned function is called. A failed renewal is reported to `onError`; the next one tries again.
 */
export function keepLease(
  leaseMs: number,
  renew: () => Promise<unknown>,
  onError: (error: unknown) => void,
): () => void {
  const timer = setInterval(
    () => {
      renew().catch(onError);
    },
    Math.max(250, Math.floor(leaseMs / 3)),
  );
  return () => clearInterval(timer);
}

/** The wait before retrying after failed attempt number `attempts` (from 1): doubling from 1 s, at most 30 s. */
export function retryDelayMs(attempts: number): number {
  return backoffDelay(attempts, { baseMs: RETRY_BASE_MS, maxMs: RETRY_MAX_MS, jitter: "none" });
}

/** The error code of an operation whose last allowed attempt never finished (see `ClaimGate`). */
export const QUARANTINED = "quarantined";

/** Why a quarantined operation ended; the same words on the operation, the workspace's reason and the log. */
export function quarantinedError(attempts: number, maxAttempts: number): { code: string; message: string } {
  return {
    code: QUARANTINED,
    message: `attempt ${attempts} of ${maxAttempts} never finished (the process running it stopped or hung); the operation was quarantined and will not run again`,
  };
}

/** The row a claim query found: a `pending` one whose time has come, or a `running` one whose lease expired. */
export interface ClaimCandidate {
  id: string;
  status: string;
  attempts: number;
}

/**
 * What a runner does with its claim query's row:
 * - `run`: claim it, beside whatever else this process runs;
 * - `run_alone`: claim it and claim nothing else until it is finished;
 * - `quarantine`: end it as failed with `quarantinedError`, without running it;
 * - `wait`: claim nothing now (the row waits until this process is idle, or another process takes it);
 * - `held`: claim nothing, this process is already running the row.
 */
export type ClaimDecision = "run" | "run_alone" | "quarantine" | "wait" | "held";

/**
 * The operations one runner process is running, and what it may claim next. A `running` row a claim finds is one
 * whose lease expired: its last attempt never finished because the process running it died or hung, possibly
 * because of that very operation (an exception thrown outside any handler ends the process). Attempts are counted
 * at claim, so that attempt is already counted, like a failed one; its lease was its backoff. Then:
 * - once its attempts are spent it is quarantined rather than run again: an operation that kills the process
 *   running it stops a service at most `maxAttempts` times, never forever;
 * - otherwise it runs again alone (after what this process is running has finished), so if it kills the process
 *   again no other operation loses an attempt with it.
 */
export class ClaimGate {
  private readonly running = new Set<string>();
  private alone: string | null = null;

  /** False while an operation runs alone: the runner does not even look for the next one. */
  get open(): boolean {
    return this.alone === null;
  }

  decide(candidate: ClaimCandidate, maxAttempts: number): ClaimDecision {
    if (this.running.has(candidate.id)) return "held";
    if (candidate.status !== "running") return this.open ? "run" : "wait";
    if (candidate.attempts >= maxAttempts) return "quarantine";
    return this.running.size === 0 ? "run_alone" : "wait";
  }

  /** Records a row this process claimed after `decide` said `run` or `run_alone`. */
  claimed(id: string, decision: "run" | "run_alone"): void {
    this.running.add(id);
    if (decision === "run_alone") this.alone = id;
  }

  finished(id: string): void {
    this.running.delete(id);
    if (this.alone === id) this.alone = null;
  }
}

/** One finished step of an operation, as stored on its row. */
export interface RecordedStep {
  name: string;
  startedAt: string;
  durationMs: number;
  detail?: string;
}

/**
 * Times an operation's steps (each from the end of the one before) and writes them in order: each `write` starts
 * after the previous one finished. `onStep` is told of each step as it is reported; `now` is the clock.
 */
export class StepRecorder {
  private last: number;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly write: (step: RecordedStep) => PromiseLike<unknown>,
    private readonly onStep?: (step: RecordedStep) => void,
    private readonly now: () => number = Date.now,
  ) {
    this.last = now();
  }

  reporter(): (name: string, detail?: string) => void {
    return (name, detail) => {
      const now = this.now();
      const step: RecordedStep = {
        name,
        startedAt: new Date(this.last).toISOString(),
        durationMs: now - this.last,
        ...(detail ? { detail } : {}),
      };
      this.last = now;
      this.chain = this.chain.then(() => this.write(step));
      this.onStep?.(step);
    };
  }

  /** Settles when every step reported so far is written; rejects if a write failed. */
  flush(): Promise<unknown> {
    return this.chain;
  }
}

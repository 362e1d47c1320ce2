import type { Answer } from "./protocol.ts";

/** What the proxy remembers to add AWS's behaviour to moto's: client tokens, not-found windows, terminations. */

export interface Timing {
  /** How long a terminated instance stays `shutting-down` before moto terminates it (AWS: tens of seconds). */
  shuttingDownMs: number;
  /** How long a new instance answers `InvalidInstanceID.NotFound` after `RunInstances` (AWS: eventual consistency). */
  notFoundMs: number;
  /** How long a `RunInstances` client token is remembered (AWS: at least 24 hours). */
  clientTokenTtlMs: number;
}

export const DEFAULT_TIMING: Timing = {
  shuttingDownMs: 200,
  notFoundMs: 100,
  clientTokenTtlMs: 24 * 60 * 60 * 1000,
};

/** Who asked: moto keeps state per account (access key) and region, and so does AWS. */
export interface Scope {
  accessKeyId: string;
  region: string;
}

export interface Termination extends Scope {
  instanceId: string;
  /** When moto is told to terminate it; null while terminations are stuck. */
  until: number | null;
}

interface TokenEntry {
  paramsKey: string;
  at: number;
  /** The first call's answer; null when it failed (then the token is free again). */
  answer: Promise<Answer | null>;
}

export type TokenClaim =
  | { kind: "first"; finish(answer: Answer | null): void }
  | { kind: "replay"; answer: Promise<Answer | null> }
  | { kind: "mismatch" };

export class FidelityState {
  private readonly tokens = new Map<string, TokenEntry>();
  private readonly hiddenUntil = new Map<string, number>();
  private readonly terminations = new Map<string, Termination>();
  private stuck = false;

  constructor(
    readonly timing: Timing,
    private readonly now: () => number,
  ) {}

  /** The first call with a token runs; later ones with the same parameters get its answer, others a mismatch. */
  claimToken(scope: Scope, token: string, paramsKey: string): TokenClaim {
    const key = `${scope.accessKeyId}|${scope.region}|${token}`;
    const existing = this.tokens.get(key);
    if (existing && existing.at + this.timing.clientTokenTtlMs > this.now()) {
      return existing.paramsKey === paramsKey
        ? { kind: "replay", answer: existing.answer }
        : { kind: "mismatch" };
    }
    let finish: (answer: Answer | null) => void = () => {};
    const answer = new Promise<Answer | null>((resolve) => {
      finish = resolve;
    });
    const entry: TokenEntry = { paramsKey, at: this.now(), answer };
    this.tokens.set(key, entry);
    return {
      kind: "first",
      finish: (result) => {
        if (!result && this.tokens.get(key) === entry) this.tokens.delete(key);
        finish(result);
      },
    };
  }

  /** New instances stay invisible for `notFoundMs`. */
  hide(instanceIds: string[]): void {
    if (this.timing.notFoundMs <= 0) return;
    const until = this.now() + this.timing.notFoundMs;
    for (const id of instanceIds) this.hiddenUntil.set(id, until);
  }

  isHidden(instanceId: string): boolean {
    const until = this.hiddenUntil.get(instanceId);
    if (until === undefined) return false;
    if (until > this.now()) return true;
    this.hiddenUntil.delete(instanceId);
    return false;
  }

  hasHiddenInstances(): boolean {
    for (const id of [...this.hiddenUntil.keys()]) this.isHidden(id);
    return this.hiddenUntil.size > 0;
  }

  beginTermination(scope: Scope, instanceId: string): void {
    if (this.terminations.has(instanceId)) return;
    const until = this.stuck ? null : this.now() + this.timing.shuttingDownMs;
    this.terminations.set(instanceId, { ...scope, instanceId, until });
  }

  isShuttingDown(instanceId: string): boolean {
    return this.terminations.has(instanceId);
  }

  hasTerminations(): boolean {
    return this.terminations.size > 0;
  }

  /** Terminations whose `shutting-down` time is over, removed from the pending set. */
  takeDueTerminations(): Termination[] {
    const now = this.now();
    const due = [...this.terminations.values()].filter((t) => t.until !== null && t.until <= now);
    for (const t of due) this.terminations.delete(t.instanceId);
    return due;
  }

  /** Stuck: terminated instances stay `shutting-down` until unstuck (then they finish `shuttingDownMs` later). */
  setTerminationsStuck(stuck: boolean): void {
    this.stuck = stuck;
    const until = this.now() + this.timing.shuttingDownMs;
    for (const t of this.terminations.values()) t.until = stuck ? null : (t.until ?? until);
  }

  get terminationsStuck(): boolean {
    return this.stuck;
  }
}

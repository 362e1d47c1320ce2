/**
 * A seeded pseudo-random source (mulberry32) for the chaos run: the same seed makes the same sequence of decisions
 * (which request, which process to kill, which fault, how long to wait), so a failing run can be replayed with
 * `CHAOS_SEED`. The processes' own timing still varies from run to run; the decisions do not.
 */
export class SeededRandom {
  private state: number;

  constructor(readonly seed: number) {
    this.state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** A whole number of milliseconds in [minMs, maxMs]. */
  ms(minMs: number, maxMs: number): number {
    return this.int(minMs, maxMs);
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from an empty list");
    return items[Math.floor(this.next() * items.length)] as T;
  }

  /** One of the keys, each with its weight (weights need not sum to 1; a weight of 0 is never picked). */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const entries = (Object.entries(weights) as [K, number][]).filter(([, weight]) => weight > 0);
    if (entries.length === 0) throw new Error("weighted pick with no positive weight");
    const total = entries.reduce((sum, [, weight]) => sum + weight, 0);
    let roll = this.next() * total;
    for (const [key, weight] of entries) {
      roll -= weight;
      if (roll < 0) return key;
    }
    return (entries.at(-1) as [K, number])[0];
  }

  /** A child source for one actor, so actors running side by side do not share (and reorder) one sequence. */
  fork(): SeededRandom {
    return new SeededRandom(this.int(1, 2 ** 31 - 1));
  }
}

/** CHAOS_SEED when given (a replay), else a fresh one. */
export function chaosSeed(fromEnv: string | undefined): number {
  if (fromEnv !== undefined && fromEnv !== "") {
    const seed = Number(fromEnv);
    if (!Number.isInteger(seed) || seed < 0)
      throw new Error(`CHAOS_SEED must be a whole number, got "${fromEnv}"`);
    return seed;
  }
  return Math.floor(Math.random() * 2 ** 31);
}

/**
 * What the rate limiter costs on the hot path: service-kit's `RateLimiter.enforce` (what the heartbeat and A2A raw
 * routes call once per request, setting the two `RateLimit` fields), against the SHA-256 of the bearer token that the
 * same requests already pay to identify their credential (`hashToken`), measured in the same run, alternating in ABBA
 * blocks so machine noise hits both. Three key patterns, each under a budget it never exceeds: one credential (an A2A
 * caller), 100,000 credentials taken in turn (every agent heartbeating, all held), and a million credentials over a
 * limiter keeping 100,000 (the eviction path). Prints nanoseconds per request for each and its ratio to the hash.
 *
 *   pnpm exec tsx bench/rate-limit.ts      BENCH_CALLS=1000000 (per block)  BENCH_BLOCKS=6
 */
import { hashToken } from "@molecule/identity";
import { RateLimiter } from "@molecule/service-kit/rate-limit";
import { envNumber, machine } from "./lib.ts";

const calls = envNumber("BENCH_CALLS", 1_000_000);
const blocks = envNumber("BENCH_BLOCKS", 6);
const headers = new Map<string, string>();
const setHeader = (name: string, value: string) => {
  headers.set(name, value);
};
// The clock moves a millisecond a call: a budget of a billion a minute is never spent, and idle keys do expire.
let now = 0;
const clock = () => now;

const tokenOf = (i: number) => `mwt_${i.toString(36).padStart(40, "0")}`;
const keysOf = (n: number) => Array.from({ length: n }, (_, i) => hashToken(tokenOf(i)));

const patterns = {
  "one credential": { keys: keysOf(1), maxKeys: 100_000 },
  "100,000 credentials in turn": { keys: keysOf(100_000), maxKeys: 100_000 },
  "1,000,000 credentials, 100,000 kept": { keys: keysOf(1_000_000), maxKeys: 100_000 },
};
type Pattern = keyof typeof patterns;

const tokens = Array.from({ length: 1000 }, (_, i) => tokenOf(i));
let sink = 0;

function hashBlock(): number {
  const started = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) sink += hashToken(tokens[i % tokens.length] as string).length;
  return Number(process.hrtime.bigint() - started) / calls;
}

function limiterBlock(limiter: RateLimiter, keys: readonly string[]): number {
  const started = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) {
    now += 1;
    limiter.enforce(keys[i % keys.length] as string, setHeader);
  }
  return Number(process.hrtime.bigint() - started) / calls;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;

console.log(machine());
for (const name of Object.keys(patterns) as Pattern[]) {
  const { keys, maxKeys } = patterns[name];
  const limiter = new RateLimiter("bench", 1_000_000_000, { now: clock, maxKeys });
  limiterBlock(limiter, keys);
  hashBlock(); // warm-up
  const times = { hash: [] as number[], limiter: [] as number[] };
  for (let i = 0; i < blocks; i++) {
    const order = i % 2 === 0 ? [false, true, true, false] : [true, false, false, true];
    for (const limited of order) {
      if (limited) times.limiter.push(limiterBlock(limiter, keys));
      else times.hash.push(hashBlock());
    }
  }
  const hash = median(times.hash);
  const limited = median(times.limiter);
  console.log(
    `${name.padEnd(38)} enforce ${limited.toFixed(0).padStart(5)} ns, token hash ${hash.toFixed(0).padStart(5)} ns, enforce/hash ${(limited / hash).toFixed(2)} (keys held ${limiter.size})`,
  );
}
if (sink === -1) console.log(sink);

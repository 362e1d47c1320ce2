import { HttpError } from "./http.ts";

export type FaultAction =
  | {
      kind: "status";
      status: number;
      retryAfter?: string;
      /** The error text; a function builds it from the request (an answer that quotes what was sent). */
      error?: string | ((req: FaultRequest) => string);
    }
  /** Apply the request, then destroy the socket without answering. */
  | { kind: "drop-after" }
  /** Destroy the socket before the request is applied. */
  | { kind: "drop-before" }
  /** Wait, then handle the request normally. */
  | { kind: "slow"; delayMs: number };

export interface FaultRequest {
  operationId: string;
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
}

export type Fault = FaultAction & {
  /** OpenAPI operationId (`Machines_create`, `Volume_delete`, …) or `*`. */
  operation: string;
  /** How many matching requests it applies to; default 1. */
  times?: number;
  when?: (req: FaultRequest) => boolean;
};

export interface RateLimit {
  /** Tokens per second per machine and action (Fly: 1/s with bursts to 3; get machine 5/s, bursts to 10). */
  perSecond: number;
  burst: number;
  getPerSecond: number;
  getBurst: number;
  /** Fly does not document Retry-After; when set, 429 answers carry it. */
  retryAfterSeconds?: number;
}

/** Faults armed by a test, each consumed by the requests it matches. */
export class FaultPlan {
  private readonly faults: (Fault & { remaining: number })[] = [];

  inject(fault: Fault): void {
    this.faults.push({ ...fault, remaining: fault.times ?? 1 });
  }

  pending(): number {
    return this.faults.reduce((sum, f) => sum + f.remaining, 0);
  }

  clear(): void {
    this.faults.length = 0;
  }

  /** The first armed fault matching `req`, consumed once. */
  take(req: FaultRequest): FaultAction | null {
    const index = this.faults.findIndex(
      (f) =>
        f.remaining > 0 &&
        (f.operation === "*" || f.operation === req.operationId) &&
        (!f.when || f.when(req)),
    );
    if (index < 0) return null;
    const fault = this.faults[index];
    if (!fault) return null;
    fault.remaining -= 1;
    if (fault.remaining <= 0) this.faults.splice(index, 1);
    return fault;
  }
}

/** The error a `status` fault answers with. */
export function faultError(fault: Extract<FaultAction, { kind: "status" }>, req: FaultRequest): HttpError {
  const headers: Record<string, string> = fault.retryAfter ? { "retry-after": fault.retryAfter } : {};
  const message = typeof fault.error === "function" ? fault.error(req) : fault.error;
  return new HttpError(fault.status, message ?? defaultMessage(fault.status), undefined, headers);
}

function defaultMessage(status: number): string {
  if (status === 429) return "rate limit exceeded";
  if (status === 502) return "bad gateway";
  if (status === 503) return "service unavailable";
  return "internal server error";
}

/** Fly's per-machine, per-action token buckets; a request over the limit answers 429. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly limit: RateLimit | undefined) {}

  check(operationId: string, params: string[]): void {
    const limit = this.limit;
    const machineId = params[1];
    if (!limit || !machineId || !operationId.startsWith("Machines_") || operationId === "Machines_wait")
      return;
    const isGet = operationId === "Machines_show";
    const rate = isGet ? limit.getPerSecond : limit.perSecond;
    const burst = isGet ? limit.getBurst : limit.burst;
    const key = `${machineId}:${operationId}`;
    const now = Date.now();
    const bucket = this.buckets.get(key) ?? { tokens: burst, at: now };
    bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * rate);
    bucket.at = now;
    this.buckets.set(key, bucket);
    if (bucket.tokens < 1) {
      const headers: Record<string, string> =
        limit.retryAfterSeconds !== undefined ? { "retry-after": String(limit.retryAfterSeconds) } : {};
      throw new HttpError(429, "rate limit exceeded", undefined, headers);
    }
    bucket.tokens -= 1;
  }
}

import type { AwsCall, ServiceFailure } from "./protocol.ts";

export type FaultAction =
  /** AWS's throttling answer: EC2 `RequestLimitExceeded` (503), JSON `ThrottlingException`, Query `Throttling`. */
  | { kind: "throttle" }
  /** EC2 500 `InternalError`; elsewhere 500 `InternalFailure`. */
  | { kind: "internal-error" }
  /** EC2 503 `Unavailable`; elsewhere 503 `ServiceUnavailable`. */
  | { kind: "unavailable" }
  /** Any other error answer in the call's protocol (`InsufficientInstanceCapacity`, …). */
  | { kind: "error"; status: number; code: string; message?: string }
  /** Destroy the connection before the call reaches moto. */
  | { kind: "drop-before" }
  /** Let moto apply the call, then destroy the connection without answering. */
  | { kind: "drop-after" }
  /** Wait, then handle the call normally. */
  | { kind: "slow"; delayMs: number };

export type Fault = FaultAction & {
  /** `RunInstances`, `DescribeInstances`, `secretsmanager.CreateSecret`, … (see `AwsCall.action`), or `*`. */
  action: string;
  /** How many matching calls it applies to; default 1. */
  times?: number;
  when?: (call: AwsCall) => boolean;
};

export function isServiceFailure(kind: FaultAction["kind"]): kind is ServiceFailure {
  return kind === "throttle" || kind === "internal-error" || kind === "unavailable";
}

/** Faults armed by a test, each consumed by the calls it matches, in the order they were armed. */
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

  take(call: AwsCall): FaultAction | null {
    const index = this.faults.findIndex(
      (f) => f.remaining > 0 && (f.action === "*" || f.action === call.action) && (!f.when || f.when(call)),
    );
    const fault = this.faults[index];
    if (!fault) return null;
    fault.remaining -= 1;
    if (fault.remaining <= 0) this.faults.splice(index, 1);
    return fault;
  }
}

/**
 * What the chaos run sent and what became of it: every request by kind and outcome (an HTTP answer is the request's
 * terminal state; a request with no answer is sent again with the same idempotency key until one comes), and every
 * operation a service accepted, until it reaches its own terminal state.
 */

export type Service = "tenant" | "control-plane";

export interface TrackedOperation {
  service: Service;
  id: string;
  kind: string;
  /** The tenant workspace, the control-plane workspace, or the org it acts on. */
  subject: string;
  /** Control plane: the org (its workspace operations go with it when the org is deleted). */
  orgId?: string;
  /** `succeeded`, `failed`, or `gone with its org`; undefined while not terminal. */
  final?: string;
  error?: unknown;
}

export class Ledger {
  private readonly requests = new Map<string, Map<string, number>>();
  readonly operations: TrackedOperation[] = [];
  /** Sends that got no answer (process killed or restarting) and were sent again with the same key. */
  resends = 0;

  record(kind: string, outcome: string): void {
    const outcomes = this.requests.get(kind) ?? new Map<string, number>();
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    this.requests.set(kind, outcomes);
  }

  track(operation: TrackedOperation): void {
    if (!this.operations.some((known) => known.service === operation.service && known.id === operation.id)) {
      this.operations.push(operation);
    }
  }

  pending(): TrackedOperation[] {
    return this.operations.filter((operation) => operation.final === undefined);
  }

  totalRequests(): number {
    let total = 0;
    for (const outcomes of this.requests.values()) for (const n of outcomes.values()) total += n;
    return total;
  }

  /** Requests by kind: one row per kind with each outcome's count, sorted. */
  requestRows(): { kind: string; outcomes: string }[] {
    return [...this.requests.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([kind, outcomes]) => ({
        kind,
        outcomes: [...outcomes.entries()]
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([outcome, n]) => `${outcome} ${n}`)
          .join(", "),
      }));
  }

  /** Operations by service and kind with their terminal states. */
  operationRows(): { kind: string; outcomes: string }[] {
    const grouped = new Map<string, Map<string, number>>();
    for (const operation of this.operations) {
      const key = `${operation.service} ${operation.kind}`;
      const outcomes = grouped.get(key) ?? new Map<string, number>();
      const final = operation.final ?? "not terminal";
      outcomes.set(final, (outcomes.get(final) ?? 0) + 1);
      grouped.set(key, outcomes);
    }
    return [...grouped.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([kind, outcomes]) => ({
        kind,
        outcomes: [...outcomes.entries()].map(([outcome, n]) => `${outcome} ${n}`).join(", "),
      }));
  }
}

/**
 * Faults the emulators inject during the chaos run, one armed at a time at random moments, each consumed by the next
 * matching request: the Fly Machines API answers 429 with Retry-After or a 5xx; AWS answers RequestLimitExceeded
 * (throttle) or 503, drops the connection after applying the call, or answers late.
 */
import type { AwsEmulator } from "@molecule/aws-emulator";
import type { FlyEmulator } from "@molecule/fly-emulator";
import type { SeededRandom } from "./random.ts";

const FLY_OPERATIONS = [
  "Machines_create",
  "Machines_start",
  "Machines_stop",
  "Machines_delete",
  "Machines_list",
  "Machines_show",
  "Machines_wait",
  "Machines_create_lease",
  "Volumes_create",
  "Volumes_list",
  "Volume_delete",
] as const;

const AWS_ACTIONS = [
  "RunInstances",
  "TerminateInstances",
  "DescribeInstances",
  "CreateSecurityGroup",
  "DeleteSecurityGroup",
  "DescribeSecurityGroups",
  "AuthorizeSecurityGroupIngress",
  "secretsmanager.CreateSecret",
  "secretsmanager.DeleteSecret",
  "secretsmanager.DescribeSecret",
  "secretsmanager.TagResource",
] as const;

export class FaultInjector {
  private readonly armed = { fly: new Map<string, number>(), aws: new Map<string, number>() };
  private unconsumed: { fly: number; aws: number } | null = null;

  constructor(
    private readonly fly: FlyEmulator,
    private readonly aws: AwsEmulator,
  ) {}

  /** Arms one random fault on one emulator. */
  injectOne(rng: SeededRandom): void {
    if (rng.chance(0.5)) {
      const operation = rng.pick(FLY_OPERATIONS);
      const kind = rng.weighted({ "429": 2, "500": 1, "502": 1, "503": 1 });
      this.fly.inject({
        operation,
        kind: "status",
        status: Number(kind),
        ...(kind === "429" ? { retryAfter: String(rng.int(1, 2)) } : {}),
      });
      this.count("fly", `${operation} ${kind}`);
      return;
    }
    const action = rng.pick(AWS_ACTIONS);
    const kind = rng.weighted({ throttle: 2, unavailable: 1, "drop-after": 1, slow: 1 });
    if (kind === "slow") this.aws.inject({ action, kind, delayMs: rng.ms(300, 2_000) });
    else this.aws.inject({ action, kind });
    this.count("aws", `${action} ${kind}`);
  }

  /** Disarms what no request consumed; from now on every call is answered as usual. */
  stop(): void {
    this.unconsumed ??= { fly: this.fly.pendingFaults(), aws: this.aws.pendingFaults() };
    this.fly.clearFaults();
    this.aws.clearFaults();
  }

  /** Armed and consumed per emulator, and the armed ones by kind. */
  summary(): { fly: { armed: number; hit: number }; aws: { armed: number; hit: number }; byKind: string } {
    const total = (map: Map<string, number>) => [...map.values()].reduce((sum, n) => sum + n, 0);
    const unconsumed = this.unconsumed ?? { fly: this.fly.pendingFaults(), aws: this.aws.pendingFaults() };
    const fly = total(this.armed.fly);
    const aws = total(this.armed.aws);
    const byKind = [...this.armed.fly.entries(), ...this.armed.aws.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([kind, n]) => `${kind} ×${n}`)
      .join(", ");
    return {
      fly: { armed: fly, hit: fly - unconsumed.fly },
      aws: { armed: aws, hit: aws - unconsumed.aws },
      byKind,
    };
  }

  private count(emulator: "fly" | "aws", kind: string): void {
    const map = this.armed[emulator];
    map.set(kind, (map.get(kind) ?? 0) + 1);
  }
}

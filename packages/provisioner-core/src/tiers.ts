import type { Tier } from "@molecule/contracts";

export interface TierLimits {
  memoryMb: number;
  cpus: number;
  /** Fly guest kind: tier 2 runs on shared CPUs. */
  cpuKind: "shared" | "performance";
  volumeGb: number;
  pidsLimit: number;
}

export const TIER_LIMITS: Readonly<Record<Tier, TierLimits>> = {
  2: { memoryMb: 512, cpus: 1, cpuKind: "shared", volumeGb: 1, pidsLimit: 512 },
  3: { memoryMb: 2048, cpus: 2, cpuKind: "performance", volumeGb: 5, pidsLimit: 1024 },
  4: { memoryMb: 4096, cpus: 4, cpuKind: "performance", volumeGb: 10, pidsLimit: 2048 },
};

export function tierLimits(tier: Tier): TierLimits {
  return TIER_LIMITS[tier];
}

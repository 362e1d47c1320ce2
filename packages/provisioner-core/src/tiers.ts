import type { Tier } from "@molecule/contracts";
import type { Capabilities } from "./provisioner.ts";

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

/** Whether a backend with these capabilities suspends a workspace of `tier` (Fly stops one above its memory limit). */
export function suspendsTier(capabilities: Capabilities, tier: Tier): boolean {
  const max = capabilities.suspendMaxMemoryMb;
  return capabilities.suspend && (max === undefined || tierLimits(tier).memoryMb <= max);
}

/** EC2 sizes per tier (the EC2 guide): an instance type and a root volume. */
export interface Ec2TierSize {
  instanceType: string;
  volumeGb: number;
}

export const EC2_TIERS: Readonly<Record<3 | 4, Ec2TierSize>> = {
  3: { instanceType: "t3.medium", volumeGb: 40 },
  4: { instanceType: "t3.large", volumeGb: 80 },
};

/** The tier an EC2 workspace of any other tier runs at: never smaller than the guide's sizes. */
export const EC2_FALLBACK_TIER = 4;

/** Runtimes whose image and workspace need a larger disk than their tier gives, in GB. */
export const EC2_RUNTIME_MIN_VOLUME_GB: Readonly<Record<string, number>> = { hermes: 50 };

export interface Ec2Size extends Ec2TierSize {
  /** The tier whose size this is (EC2_FALLBACK_TIER when the asked tier has none). */
  tier: 3 | 4;
  /** True when the asked tier had no EC2 size and was raised to EC2_FALLBACK_TIER. */
  clamped: boolean;
}

/** The EC2 size of a workspace: its tier's (tiers outside 3-4 clamp to 4), with the runtime's minimum disk. */
export function ec2Size(tier: number, runtime: string): Ec2Size {
  const known = tier === 3 || tier === 4;
  const used = known ? tier : EC2_FALLBACK_TIER;
  const size = EC2_TIERS[used];
  const minimum = EC2_RUNTIME_MIN_VOLUME_GB[runtime] ?? 0;
  return { ...size, volumeGb: Math.max(size.volumeGb, minimum), tier: used, clamped: !known };
}

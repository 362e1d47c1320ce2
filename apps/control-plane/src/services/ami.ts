import type { Db } from "@molecule/db";
import { ProvisionerError } from "@molecule/provisioner-core";
import { and, eq } from "drizzle-orm";
import { cpThinAmiPins } from "../db/schema.ts";

/** The runtime name tenants are pinned under in cp_thin_ami_pins. */
export const TENANT_RUNTIME = "tenant-platform";

export interface AmiChoice {
  amiId: string;
  /** Where it came from, for the operation's steps. */
  source: "pin" | "EC2_AMI";
}

/**
 * The AMI an instance of `runtime` boots from in `region`: the pin for (runtime, region), else EC2_AMI, else a
 * non-retryable error that says how to fix it.
 */
export async function chooseAmi(
  db: Db,
  runtime: string,
  region: string,
  fallbackAmi: string | null,
): Promise<AmiChoice> {
  const [pin] = await db
    .select({ amiId: cpThinAmiPins.amiId })
    .from(cpThinAmiPins)
    .where(and(eq(cpThinAmiPins.runtime, runtime), eq(cpThinAmiPins.region, region)))
    .limit(1);
  if (pin) return { amiId: pin.amiId, source: "pin" };
  if (fallbackAmi) return { amiId: fallbackAmi, source: "EC2_AMI" };
  throw new ProvisionerError(
    "invalid_spec",
    `no AMI for runtime "${runtime}" in ${region}: pin one in cp_thin_ami_pins or set EC2_AMI`,
    false,
  );
}

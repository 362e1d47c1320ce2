import { type AmiPin, DomainError } from "@molecule/contracts";
import type { Db } from "@molecule/db";
import { ProvisionerError } from "@molecule/provisioner-core";
import { and, asc, eq } from "drizzle-orm";
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

function pinView(row: typeof cpThinAmiPins.$inferSelect): AmiPin {
  return {
    runtime: row.runtime,
    region: row.region,
    ami_id: row.amiId,
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  };
}

/** The pins as `/cp/admin/ami-pins` shows and edits them; instances launched from then on use them. */
export class AmiPins {
  constructor(
    private readonly db: Db,
    private readonly clock: { now(): Date },
  ) {}

  async list(): Promise<AmiPin[]> {
    const rows = await this.db
      .select()
      .from(cpThinAmiPins)
      .orderBy(asc(cpThinAmiPins.runtime), asc(cpThinAmiPins.region));
    return rows.map(pinView);
  }

  /** Pins `amiId` for (runtime, region), replacing an earlier pin. */
  async put(runtime: string, region: string, amiId: string): Promise<AmiPin> {
    const now = this.clock.now();
    const [row] = await this.db
      .insert(cpThinAmiPins)
      .values({ runtime, region, amiId, createdAt: now, updatedAt: now })
      .onConflictDoUpdate({
        target: [cpThinAmiPins.runtime, cpThinAmiPins.region],
        set: { amiId, updatedAt: now },
      })
      .returning();
    if (!row) throw new Error("the pin was not written");
    return pinView(row);
  }

  /** Removes the pin (EC2_AMI applies again); no pin is a 404. */
  async delete(runtime: string, region: string): Promise<void> {
    const removed = await this.db
      .delete(cpThinAmiPins)
      .where(and(eq(cpThinAmiPins.runtime, runtime), eq(cpThinAmiPins.region, region)))
      .returning({ runtime: cpThinAmiPins.runtime });
    if (removed.length === 0) {
      throw new DomainError("not_found", `no AMI is pinned for ${runtime} in ${region}`);
    }
  }
}

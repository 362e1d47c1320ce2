import type { IdGenerator } from "@molecule/contracts";
import type { Db } from "@molecule/db";
import type { Provisioner } from "@molecule/provisioner-core";
import type { Logger } from "pino";
import type { Sealer } from "./crypto.ts";

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** What the services and routes are built from; `main()` wires real ones, tests wire real ones too. */
export interface PlatformDeps {
  db: Db;
  provisioner: Provisioner;
  sealer: Sealer;
  clock: Clock;
  ids: IdGenerator;
  logger: Logger;
  settings: PlatformSettings;
}

export interface PlatformSettings {
  orgId: string;
  deployment: string;
  adminToken: string | null;
  publicUrl: string;
  allowedRuntimes: readonly string[];
  maxBodyBytes: number;
  staleAfterMs: number;
  operationLeaseMs: number;
  operationMaxAttempts: number;
  /** Non-secret environment every workspace gets (e.g. AGENT_PORT=0 when workspaces share the host network). */
  workspaceEnv: Record<string, string>;
}

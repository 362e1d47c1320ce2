import { DomainError, EXTERNAL_RUNTIME, LIVE_STATUSES } from "@molecule/contracts";
import { type WorkspaceSecretRow, workspaceSecrets, workspaces } from "@molecule/db";
import { SealedValueError, type Sealer } from "@molecule/identity";
import { and, asc, eq, inArray, ne } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";

/** The values of a workspace's secret rows; a `SealedValueError` naming the first secret that cannot be opened. */
export function openSecrets(
  sealer: Sealer,
  workspaceId: string,
  rows: readonly Pick<WorkspaceSecretRow, "key" | "sealed" | "keyVersion">[],
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const row of rows) {
    try {
      out[row.key] = sealer.open(row.sealed, row.keyVersion, `${workspaceId}:${row.key}`);
    } catch (error) {
      if (!(error instanceof SealedValueError)) throw error;
      throw new SealedValueError(
        error.keyVersion,
        `secret ${row.key} of workspace ${workspaceId} is ${error.message}`,
      );
    }
  }
  return out;
}

/**
 * Workspace secrets, sealed at rest. A change to a running workspace marks it `needsRestart`: the running
 * process keeps the values it started with until it is restarted (or pulls them again itself). External workspaces
 * are never marked: the platform cannot restart them, and their agents pull secrets on demand.
 */
export class SecretService {
  constructor(private readonly deps: PlatformDeps) {}

  async listKeys(workspaceId: string) {
    const rows = await this.deps.db
      .select({ key: workspaceSecrets.key, updatedAt: workspaceSecrets.updatedAt })
      .from(workspaceSecrets)
      .where(eq(workspaceSecrets.workspaceId, workspaceId))
      .orderBy(asc(workspaceSecrets.key));
    return rows.map((row) => ({ key: row.key, updatedAt: row.updatedAt.toISOString() }));
  }

  /** Every value opened; a `SealedValueError` (503 `secrets_key_unavailable`) naming the secret that cannot be. */
  async values(workspaceId: string): Promise<Record<string, string>> {
    const rows = await this.deps.db
      .select()
      .from(workspaceSecrets)
      .where(eq(workspaceSecrets.workspaceId, workspaceId));
    return openSecrets(this.deps.sealer, workspaceId, rows);
  }

  async put(workspaceId: string, key: string, value: string) {
    const { sealed, keyVersion } = this.deps.sealer.seal(value, `${workspaceId}:${key}`);
    return this.deps.db.transaction(async (tx) => {
      await this.lockEditable(tx, workspaceId);
      await tx
        .insert(workspaceSecrets)
        .values({ workspaceId, key, sealed, keyVersion })
        .onConflictDoUpdate({
          target: [workspaceSecrets.workspaceId, workspaceSecrets.key],
          set: { sealed, keyVersion, updatedAt: new Date() },
        });
      return { key, needsRestart: await this.markNeedsRestart(tx, workspaceId) };
    });
  }

  async remove(workspaceId: string, key: string) {
    return this.deps.db.transaction(async (tx) => {
      await this.lockEditable(tx, workspaceId);
      const removed = await tx
        .delete(workspaceSecrets)
        .where(and(eq(workspaceSecrets.workspaceId, workspaceId), eq(workspaceSecrets.key, key)))
        .returning({ key: workspaceSecrets.key });
      if (removed.length === 0) throw new DomainError("not_found", `secret ${key} not found`);
      return { key, needsRestart: await this.markNeedsRestart(tx, workspaceId) };
    });
  }

  private async lockEditable(tx: Pick<PlatformDeps["db"], "select">, workspaceId: string): Promise<void> {
    const [row] = await tx
      .select({ status: workspaces.status })
      .from(workspaces)
      .where(and(eq(workspaces.id, workspaceId), eq(workspaces.orgId, this.deps.settings.orgId)))
      .for("update");
    if (!row) throw new DomainError("not_found", `workspace ${workspaceId} not found`);
    if (row.status === "removing" || row.status === "removed") {
      throw new DomainError("invalid_transition", `workspace ${workspaceId} is ${row.status}`);
    }
  }

  private async markNeedsRestart(
    tx: Pick<PlatformDeps["db"], "update">,
    workspaceId: string,
  ): Promise<boolean> {
    const marked = await tx
      .update(workspaces)
      .set({ needsRestart: true, updatedAt: new Date() })
      .where(
        and(
          eq(workspaces.id, workspaceId),
          inArray(workspaces.status, [...LIVE_STATUSES, "provisioning"]),
          ne(workspaces.runtime, EXTERNAL_RUNTIME),
        ),
      )
      .returning({ id: workspaces.id });
    return marked.length > 0;
  }
}

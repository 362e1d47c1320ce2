/**
 * The resource audit both services keep (provisioner-core's ResourceAudit over a table): a row per resource a backend
 * is about to create (`intent`), completed with the provider's id once it exists (`claimed`), and `released` once the
 * subject's destroy has succeeded. The reconciler reads the open rows as claims and resolves intents a crash left
 * behind by listing.
 */
import type { ManagedResource, ResourceAudit } from "@molecule/provisioner-core";
import { and, eq, inArray, ne } from "drizzle-orm";
import type { AnyPgColumn, PgDatabase, PgQueryResultHKT, PgTable } from "drizzle-orm/pg-core";

type AuditColumn =
  | "subjectId"
  | "orgId"
  | "backend"
  | "kind"
  | "name"
  | "providerId"
  | "state"
  | "updatedAt"
  | "releasedAt";

/** A drizzle table of audit rows: these columns under these property names, keyed by (subjectId, kind, name). */
export type AuditTable = PgTable & Record<AuditColumn, AnyPgColumn>;

export const AUDIT_STATES = ["intent", "claimed", "released"] as const;

// biome-ignore lint/suspicious/noExplicitAny: both apps' schemas are accepted.
type AnyDb = PgDatabase<PgQueryResultHKT, any>;

export interface AuditScope {
  /** The workspace id (or, for a control plane tenant, the org id) the resources are for. */
  subjectId: string;
  orgId: string;
  backend: string;
}

/** The port a backend call gets: rows for `scope`'s subject in `table`. */
export function tableAudit(db: AnyDb, table: AuditTable, scope: AuditScope, now: () => Date): ResourceAudit {
  const upsert = (kind: string, name: string, state: "intent" | "claimed", providerId: string | null) =>
    db
      .insert(table)
      .values({
        subjectId: scope.subjectId,
        orgId: scope.orgId,
        backend: scope.backend,
        kind,
        name,
        providerId,
        state,
        updatedAt: now(),
      } as never)
      .onConflictDoUpdate({
        target: [table.subjectId, table.kind, table.name],
        set: {
          state,
          ...(providerId === null ? {} : { providerId }),
          backend: scope.backend,
          updatedAt: now(),
          releasedAt: null,
        } as never,
      });
  return {
    intent: async (kind, name) => void (await upsert(kind, name, "intent", null)),
    claim: async (kind, name, providerId) => void (await upsert(kind, name, "claimed", providerId)),
  };
}

/** After a destroy succeeded: every open row of the subject (or, after an org delete, of the org) is released. */
export async function releaseAudited(
  db: AnyDb,
  table: AuditTable,
  of: { subjectId: string } | { orgId: string },
  now: Date,
): Promise<void> {
  const scope = "subjectId" in of ? eq(table.subjectId, of.subjectId) : eq(table.orgId, of.orgId);
  await db
    .update(table)
    .set({ state: "released", releasedAt: now, updatedAt: now } as never)
    .where(and(scope, ne(table.state, "released")));
}

/** The audit's backend name for a tenant backend's resources (the workspace backend may have the same name). */
export const tenantAuditBackend = (name: string) => `tenant:${name}`;

/** Provider ids of open rows (intent or claimed) of `backend`: live claims for the reconciler. */
export async function openProviderIds(db: AnyDb, table: AuditTable, backend: string): Promise<Set<string>> {
  const rows = await db
    .select({ providerId: table.providerId })
    .from(table)
    .where(and(eq(table.backend, backend), inArray(table.state, ["intent", "claimed"])));
  return new Set(rows.map((row) => row.providerId).filter((id): id is string => typeof id === "string"));
}

/**
 * Intents a crash left open (the create call ran, the claim never did): each one whose resource the backend lists
 * (same subject and kind) is claimed with the listed id. Returns how many were resolved.
 */
export async function resolveIntents(
  db: AnyDb,
  table: AuditTable,
  backend: string,
  resources: readonly ManagedResource[],
  subjectOf: (resource: ManagedResource) => string | null,
  now: Date,
): Promise<number> {
  const intents = await db
    .select({ subjectId: table.subjectId, kind: table.kind, name: table.name })
    .from(table)
    .where(and(eq(table.backend, backend), eq(table.state, "intent")));
  let resolved = 0;
  for (const intent of intents) {
    const found = resources.find(
      (resource) => resource.kind === intent.kind && subjectOf(resource) === intent.subjectId,
    );
    if (!found) continue;
    await db
      .update(table)
      .set({ state: "claimed", providerId: found.id, updatedAt: now } as never)
      .where(
        and(
          eq(table.subjectId, String(intent.subjectId)),
          eq(table.kind, String(intent.kind)),
          eq(table.name, String(intent.name)),
          eq(table.state, "intent"),
        ),
      );
    resolved++;
  }
  return resolved;
}

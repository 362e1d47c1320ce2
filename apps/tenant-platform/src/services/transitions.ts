import { sourcesOf, type WorkspaceStatus } from "@molecule/contracts";
import { workspaces } from "@molecule/db";
import { and, eq, inArray } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";

/**
 * Moves a workspace to `to` only from a status the shared transition table allows (and, if given, only from
 * `from`). Returns whether it moved: a concurrent change (a delete, say) wins and this one becomes a no-op.
 */
export async function transitionWorkspace(
  deps: Pick<PlatformDeps, "db">,
  workspaceId: string,
  to: WorkspaceStatus,
  options: { from?: readonly WorkspaceStatus[]; reason?: string | null } = {},
): Promise<boolean> {
  const allowed = sourcesOf(to).filter((status) => !options.from || options.from.includes(status));
  if (allowed.length === 0) return false;
  const moved = await deps.db
    .update(workspaces)
    .set({ status: to, statusReason: options.reason ?? null, updatedAt: new Date() })
    .where(and(eq(workspaces.id, workspaceId), inArray(workspaces.status, allowed)))
    .returning({ id: workspaces.id });
  return moved.length > 0;
}

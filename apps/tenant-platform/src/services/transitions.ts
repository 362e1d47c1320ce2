import { sourcesOf, type WorkspaceStatus } from "@molecule/contracts";
import { workspaces } from "@molecule/db";
import type { AttemptContext } from "@molecule/service-kit/runner";
import { eq } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";

/**
 * Moves a workspace to `to` only from a status the shared transition table allows (and, if given, only from
 * `from`). Returns whether it moved: a concurrent change (a delete, say) wins and this one becomes a no-op.
 * A move is published as a `workspace.status` event once it is committed. `within` runs the move's transaction
 * (an operation's attempt passes `attempt.fenced`, so a move it is no longer entitled to is never made).
 */
export async function transitionWorkspace(
  deps: Pick<PlatformDeps, "db" | "events">,
  workspaceId: string,
  to: WorkspaceStatus,
  options: {
    from?: readonly WorkspaceStatus[];
    reason?: string | null;
    within?: AttemptContext["fenced"];
  } = {},
): Promise<boolean> {
  const allowed = sourcesOf(to).filter((status) => !options.from || options.from.includes(status));
  // With `within`, the writes that ride along with the move are made even when no move can be.
  if (allowed.length === 0 && !options.within) return false;
  const reason = options.reason ?? null;
  // The row is locked while it is read and moved, so `from` in the event is the status it really left.
  const within = options.within ?? ((move) => deps.db.transaction(move));
  const from = await within(async (tx) => {
    const [row] = await tx
      .select({ status: workspaces.status })
      .from(workspaces)
      .where(eq(workspaces.id, workspaceId))
      .for("update");
    if (!row || !allowed.includes(row.status)) return null;
    await tx
      .update(workspaces)
      .set({ status: to, statusReason: reason, updatedAt: new Date() })
      .where(eq(workspaces.id, workspaceId));
    return row.status;
  });
  if (from === null) return false;
  deps.events.publish({ type: "workspace.status", workspaceId, data: { from, to, reason } });
  return true;
}

import { workspaces } from "@molecule/db";
import { eq, sql } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";

/**
 * When each workspace last had an A2A message to or from it, or reported activity in a heartbeat: what the idle
 * sweep reads (`workspaces.last_activity_at`). A call in flight keeps both its ends active until it ends (`hold`), so a
 * stream longer than an idle time is not cut by a suspend. Recording is a few Map writes on the proxy's hot path; the newest time per
 * workspace is written every `intervalMs` (≤ 1 s, as heartbeats are) by one `UPDATE … FROM jsonb_to_recordset(…)`.
 * The column is bookkeeping the change-notification trigger ignores, so a write drops nothing the replicas keep.
 * The idle sweep flushes this process's buffer first; another replica's is at most one interval behind, which the
 * sweep waits out before it suspends anything (`IdleSuspender`).
 */
export class ActivityTracker {
  private pending = new Map<string, Date>();
  /** Calls open per workspace: each flush counts them as active now (a stream may run longer than an idle time). */
  private readonly open = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly deps: Pick<PlatformDeps, "db" | "clock" | "logger">,
    readonly intervalMs: number,
  ) {}

  /** Notes activity of `workspaceId` now. */
  touch(workspaceId: string): void {
    this.pending.set(workspaceId, this.deps.clock.now());
  }

  /**
   * Notes activity of both ends of a call now and holds them active until the returned function is called (once; a
   * second call does nothing), which notes activity again.
   */
  hold(workspaceId: string, otherId: string | null): () => void {
    this.opened(workspaceId);
    if (otherId !== null) this.opened(otherId);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.closed(workspaceId);
      if (otherId !== null) this.closed(otherId);
    };
  }

  private opened(workspaceId: string): void {
    this.open.set(workspaceId, (this.open.get(workspaceId) ?? 0) + 1);
    this.touch(workspaceId);
  }

  private closed(workspaceId: string): void {
    const count = (this.open.get(workspaceId) ?? 1) - 1;
    if (count > 0) this.open.set(workspaceId, count);
    else this.open.delete(workspaceId);
    this.touch(workspaceId);
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
  }

  /** Stops the loop, then writes what is buffered. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.flush();
  }

  /** Writes the buffered times now (one statement). Flushes never overlap. */
  flush(): Promise<void> {
    this.flushing = this.flushing
      .then(() => this.write())
      .catch((error: unknown) => this.deps.logger.error({ err: error }, "activity flush failed"));
    return this.flushing;
  }

  /** Workspaces waiting for the next flush. */
  get buffered(): number {
    return this.pending.size;
  }

  private async write(): Promise<void> {
    if (this.open.size > 0) {
      const now = this.deps.clock.now();
      for (const workspaceId of this.open.keys()) this.pending.set(workspaceId, now);
    }
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    const rows = [...batch].map(([id, at]) => ({ id, at: at.toISOString() }));
    try {
      await this.deps.db
        .update(workspaces)
        .set({ lastActivityAt: sql`greatest(${workspaces.lastActivityAt}, seen.at)` })
        .from(sql`jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as seen(id text, at timestamptz)`)
        .where(eq(workspaces.id, sql`seen.id`));
    } catch (error) {
      // Kept for the next flush unless newer activity of the same workspace has arrived meanwhile.
      for (const [id, at] of batch) if (!this.pending.has(id)) this.pending.set(id, at);
      this.deps.logger.error(
        { err: error, workspaces: batch.size },
        "writing activity failed; retried next flush",
      );
    }
  }
}

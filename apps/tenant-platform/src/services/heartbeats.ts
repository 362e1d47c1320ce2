import { workspaces } from "@molecule/db";
import { and, eq, sql } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";

/** The statuses a steady-state heartbeat keeps a workspace in; any other status takes the synchronous path. */
export type LiveStatus = "online" | "degraded";

/**
 * Where changes made by other processes on the same database are heard of. While `live` is false (the listening
 * connection is down, or not yet up) a change may go unheard, so nothing in memory is trusted; `onChange(null)` says
 * changes may have been missed (a reconnect) and everything is forgotten.
 */
export interface WorkspaceChangeSource {
  readonly live: boolean;
  onChange(listener: (workspaceId: string | null) => void): () => void;
}

/** One process alone on its database (the embedded one): every change is made here, and the event bus hears it. */
export const SINGLE_PROCESS: WorkspaceChangeSource = { live: true, onChange: () => () => {} };

/** How long a steady-state heartbeat waits in memory at most: a tenth of the stale threshold, and at most 1 s. */
export function heartbeatFlushIntervalMs(staleAfterMs: number): number {
  return Math.max(10, Math.min(1000, Math.floor(staleAfterMs / 10)));
}

interface Known {
  workspaceId: string;
  status: LiveStatus;
}

interface Pending {
  tokenHash: string;
  /** The status the heartbeat was answered with: the batch writes only where the row still has it. */
  status: LiveStatus;
  /** What the agent reported ("ok" or "degraded"), for the event. */
  reported: string;
  at: Date;
}

/**
 * Steady-state heartbeats, answered from memory and written in one statement per flush interval.
 *
 * Most heartbeats change nothing but `last_heartbeat_at`: the workspace is already online (or degraded) and the
 * agent says the same. Once a heartbeat has gone through the synchronous path (`RegistryService.heartbeat`: token
 * checked in the statement that records it), this remembers its token's hash → workspace and status, and the next
 * ones with that token, for that workspace and reporting the same state, are answered at once; their times are kept
 * (the newest per workspace) and written together every `intervalMs` by one `UPDATE … FROM jsonb_to_recordset(…)`.
 *
 * - Liveness is correct to within the interval (default a tenth of HEARTBEAT_STALE_AFTER, at most 1 s): a beat's own
 *   arrival time is written, not the flush's, so the sweep's cutoff sees it as it was, at most one interval late,
 *   far inside the stale threshold. This process's sweep flushes first; `stop()` flushes on shutdown.
 * - Anything that may change the status (a first beat, one after `offline`, degraded ↔ online, a workspace being
 *   removed, an unknown token) is not in memory and takes the synchronous path.
 * - Memory is forgotten for a workspace as soon as a change to its status or tokens is heard of: from this process's
 *   event bus at once (`watchWorkspaceChanges`), from other processes through `changes`; while `changes` is not live
 *   nothing is answered from memory. A synchronous beat remembers only if nothing was forgotten while it ran, so a
 *   revoke that overtakes it is not undone.
 * - The batch writes a workspace's beat only while its status is still the one answered and the token is still its
 *   current bearer token: a beat that raced a revoke (rotated by registering again, or the workspace deleted)
 *   writes nothing, and the workspace is forgotten so its next beat takes the synchronous path.
 * - `workspace.heartbeat` events for these beats are published after each batch, one per workspace written (its
 *   newest beat), instead of one per beat.
 */
export class HeartbeatBatcher {
  private readonly known = new Map<string, Known>();
  private readonly tokenOf = new Map<string, string>();
  private pending = new Map<string, Pending>();
  private generation = 0;
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  private accepting = false;
  private readonly unwatch: Array<() => void> = [];

  constructor(
    private readonly deps: Pick<PlatformDeps, "db" | "events" | "clock" | "logger">,
    readonly intervalMs: number,
    private readonly changes: WorkspaceChangeSource | null,
  ) {}

  /** Starts answering from memory and the flush loop (`timer: false` leaves flushing to the caller, for tests). */
  start(options: { timer?: boolean } = {}): void {
    if (!this.changes) return;
    if (!this.accepting) {
      const changes = this.changes;
      this.unwatch.push(
        this.deps.events.watchWorkspaceChanges((id) => this.forget(id)),
        changes.onChange((id) => (id === null ? this.forgetAll() : this.forget(id))),
      );
      this.accepting = true;
    }
    if (options.timer === false || this.timer) return;
    this.timer = setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
  }

  /** Stops answering from memory, then writes what is buffered. */
  async stop(): Promise<void> {
    this.accepting = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const unwatch of this.unwatch.splice(0)) unwatch();
    this.forgetAll();
    await this.flush();
  }

  /**
   * The answer to a heartbeat with this token for this workspace reporting `target`, when memory can give it (the
   * beat is then buffered); null when it must take the synchronous path.
   */
  record(tokenHash: string, workspaceId: string, target: LiveStatus, reported: string): LiveStatus | null {
    if (!this.trusted()) return null;
    const known = this.known.get(tokenHash);
    if (!known || known.workspaceId !== workspaceId || known.status !== target) return null;
    this.pending.set(workspaceId, { tokenHash, status: known.status, reported, at: this.deps.clock.now() });
    return known.status;
  }

  /** Whether memory vouches for this token (a bad body sent with it is then a 400, not a 401). */
  vouchesFor(tokenHash: string): boolean {
    return this.trusted() && this.known.has(tokenHash);
  }

  /** Taken before a synchronous heartbeat's statement; `remember` with it is ignored if anything was forgotten since. */
  mark(): number {
    return this.generation;
  }

  /** After a synchronous heartbeat left the workspace `status` with this (then current) token. */
  remember(mark: number, tokenHash: string, workspaceId: string, status: string): void {
    if (mark !== this.generation || !this.trusted()) return;
    if (status !== "online" && status !== "degraded") return;
    const previous = this.tokenOf.get(workspaceId);
    if (previous !== undefined && previous !== tokenHash) this.known.delete(previous);
    this.known.set(tokenHash, { workspaceId, status });
    this.tokenOf.set(workspaceId, tokenHash);
  }

  /** Writes the buffered beats now (one statement), then publishes their events. Flushes never overlap. */
  flush(): Promise<void> {
    this.flushing = this.flushing
      .then(() => this.writeBatch())
      .catch((error: unknown) => this.deps.logger.error({ err: error }, "heartbeat flush failed"));
    return this.flushing;
  }

  /** Beats waiting for the next flush. */
  get buffered(): number {
    return this.pending.size;
  }

  private trusted(): boolean {
    return this.accepting && this.changes !== null && this.changes.live;
  }

  private forget(workspaceId: string): void {
    this.generation++;
    const tokenHash = this.tokenOf.get(workspaceId);
    if (tokenHash === undefined) return;
    this.tokenOf.delete(workspaceId);
    this.known.delete(tokenHash);
  }

  private forgetAll(): void {
    this.generation++;
    this.known.clear();
    this.tokenOf.clear();
  }

  private async writeBatch(): Promise<void> {
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    const rows = [...batch].map(([id, beat]) => ({
      id,
      token_hash: beat.tokenHash,
      status: beat.status,
      at: beat.at.toISOString(),
    }));
    let written: Array<{ id: string }>;
    try {
      written = await this.deps.db
        .update(workspaces)
        .set({ lastHeartbeatAt: sql`greatest(${workspaces.lastHeartbeatAt}, beat.at)` })
        .from(
          sql`jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as beat(id text, token_hash text, status text, at timestamptz)
            join workspace_tokens as current on current.token_hash = beat.token_hash and current.kind = 'auth'`,
        )
        .where(
          and(
            eq(workspaces.id, sql`beat.id`),
            sql`current.workspace_id = ${workspaces.id}`,
            sql`${workspaces.status}::text = beat.status`,
          ),
        )
        .returning({ id: workspaces.id });
    } catch (error) {
      // Kept for the next flush unless a newer beat of the same workspace has arrived meanwhile.
      for (const [id, beat] of batch) if (!this.pending.has(id)) this.pending.set(id, beat);
      this.deps.logger.error(
        { err: error, beats: batch.size },
        "writing heartbeats failed; retried next flush",
      );
      return;
    }
    const done = new Set(written.map((row) => row.id));
    for (const [id, beat] of batch) {
      if (!done.has(id)) {
        // Its status moved or its token was revoked since: the next beat must take the synchronous path.
        if (this.tokenOf.get(id) === beat.tokenHash) this.forget(id);
        continue;
      }
      this.deps.events.publish({
        type: "workspace.heartbeat",
        workspaceId: id,
        data: { at: beat.at.toISOString(), status: beat.reported },
      });
    }
  }
}

import { type Db, workspaces, workspaceTokens } from "@molecule/db";
import { type ChangeFeed, InvalidatedCache } from "@molecule/service-kit/cluster";
import { and, eq, sql } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";

/** The statuses a steady-state heartbeat keeps a workspace in; any other status takes the synchronous path. */
export type LiveStatus = "online" | "degraded";

const LIVE: ReadonlySet<string> = new Set<LiveStatus>(["online", "degraded"]);

/** How long a steady-state heartbeat waits in memory at most: a tenth of the stale threshold, and at most 1 s. */
export function heartbeatFlushIntervalMs(staleAfterMs: number): number {
  return Math.max(10, Math.min(1000, Math.floor(staleAfterMs / 10)));
}

/** A bearer token's workspace and that workspace's status, as the database had them. */
interface TokenView {
  workspaceId: string;
  orgId: string;
  status: string;
}

/** What memory says of a heartbeat: answered (buffered), a token that is nobody's, or "ask the database". */
export type Recorded = { answered: LiveStatus } | { unknownToken: true } | null;

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
 * agent says the same. Memory holds, per bearer token's hash, its workspace and that workspace's status (an
 * `InvalidatedCache` fed by the database's change notifications: any change to the workspace's row other than
 * heartbeat bookkeeping, or to its tokens, drops it, from whichever replica it came). A heartbeat whose token memory
 * knows, for that workspace and reporting the state it is in, is answered at once; its time is kept (the newest per
 * workspace) and written with the others every `intervalMs` by one `UPDATE … FROM jsonb_to_recordset(…)`.
 *
 * - A token memory does not know is looked up once (token → workspace and status, one indexed read); an unknown one
 *   is refused at once, a known one is remembered while its workspace is online or degraded.
 * - Liveness is correct to within the interval (a tenth of HEARTBEAT_STALE_AFTER, at most 1 s): a beat's own arrival
 *   time is written, not the flush's, so the sweep's cutoff sees it at most one interval late, far inside the stale
 *   threshold. This process's sweep flushes first; `stop()` flushes on shutdown.
 * - Anything that may change the status (a first beat, one after `offline`, degraded ↔ online, a workspace being
 *   removed) takes the synchronous path (`RegistryService.heartbeat`), which checks the token in the statement that
 *   records the beat.
 * - A change is forgotten in this process at once (its event bus, `watchWorkspaceChanges`) and in the others when the
 *   notification arrives; while the feed is disconnected memory is not used at all, and it starts empty on reconnect.
 * - The batch writes a workspace's beat only while its status is still the one answered and the token is still its
 *   current bearer token: a beat that raced a revoke (rotated by registering again, or the workspace deleted) writes
 *   nothing, and its workspace is forgotten so the next beat takes the synchronous path.
 * - `workspace.heartbeat` events for these beats are published after each batch, one per workspace written (its
 *   newest beat), instead of one per beat.
 */
export class HeartbeatBatcher {
  private readonly tokens: InvalidatedCache<string, TokenView | null> | null;
  private readonly feed: ChangeFeed | null;
  private pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  private accepting = false;
  private unwatch: (() => void) | null = null;
  private lookupQuery: ReturnType<typeof prepareLookup> | null = null;

  /** Without `feed` (no way to hear other replicas' changes) nothing is answered from memory: every beat is written. */
  constructor(
    private readonly deps: Pick<PlatformDeps, "db" | "events" | "clock" | "logger" | "settings">,
    readonly intervalMs: number,
    feed: ChangeFeed | null,
  ) {
    this.feed = feed;
    this.tokens = feed
      ? new InvalidatedCache<string, TokenView | null>({
          feed,
          tagTopics: ["workspaces", "workspace_tokens"],
          tagOf: (view) => view?.workspaceId ?? null,
          // Unknown tokens (anyone can make them up) and workspaces a beat would move are not kept.
          keep: (view) => view !== null && LIVE.has(view.status),
        })
      : null;
  }

  /** Starts answering from memory and the flush loop (`timer: false` leaves flushing to the caller, for tests). */
  start(options: { timer?: boolean } = {}): void {
    const tokens = this.tokens;
    if (!tokens) return;
    if (!this.accepting) {
      this.unwatch = this.deps.events.watchWorkspaceChanges((id) => tokens.invalidateTag(id));
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
    this.unwatch?.();
    this.unwatch = null;
    this.tokens?.clear();
    await this.flush();
  }

  /**
   * Memory's answer to a heartbeat with this token for this workspace reporting `target` (the beat is then buffered),
   * or that the token is nobody's; null when the synchronous path must decide.
   */
  async record(
    tokenHash: string,
    workspaceId: string,
    target: LiveStatus,
    reported: string,
  ): Promise<Recorded> {
    const tokens = this.tokens;
    if (!tokens || !this.accepting) return null;
    if (!this.feed?.connected) return null;
    const view = tokens.peek(tokenHash) ?? (await tokens.get(tokenHash, () => this.lookup(tokenHash)));
    if (view === null) return { unknownToken: true };
    const steady =
      view.workspaceId === workspaceId && view.orgId === this.deps.settings.orgId && view.status === target;
    if (!steady || !this.accepting) return null;
    this.pending.set(workspaceId, { tokenHash, status: target, reported, at: this.deps.clock.now() });
    return { answered: target };
  }

  /** Whether memory vouches for this token (a bad body sent with it is then a 400, not a 401). */
  vouchesFor(tokenHash: string): boolean {
    return this.accepting && this.tokens?.peek(tokenHash) != null;
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

  private async lookup(tokenHash: string): Promise<TokenView | null> {
    this.lookupQuery ??= prepareLookup(this.deps.db);
    const [row] = await this.lookupQuery.execute({ tokenHash });
    return row ?? null;
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
        this.tokens?.invalidateTag(id);
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

/** A current bearer (`auth`) token's workspace, its org and its status. */
function prepareLookup(db: Db) {
  return db
    .select({ workspaceId: workspaces.id, orgId: workspaces.orgId, status: workspaces.status })
    .from(workspaceTokens)
    .innerJoin(workspaces, eq(workspaces.id, workspaceTokens.workspaceId))
    .where(and(eq(workspaceTokens.tokenHash, sql.placeholder("tokenHash")), eq(workspaceTokens.kind, "auth")))
    .prepare("heartbeat_token_view");
}

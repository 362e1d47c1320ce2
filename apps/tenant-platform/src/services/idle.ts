import { DomainError, EXTERNAL_RUNTIME } from "@molecule/contracts";
import { operations, workspaces } from "@molecule/db";
import { and, eq, inArray, ne, notExists, sql } from "drizzle-orm";
import type { ActivityTracker } from "./activity.ts";
import type { PlatformDeps } from "./deps.ts";
import type { WorkspaceService } from "./workspaces.ts";

/** The idle sweep's advisory lock: with N replicas, one looks for idle workspaces at a time. */
export const TENANT_IDLE_LOCK = 74_201_328;

/**
 * Suspends workspaces nobody uses. A workspace is idle when no A2A message went to or from it and its agent reported
 * no activity (`active` in a heartbeat) for its `idle_suspend_seconds`, or the platform's IDLE_SUSPEND_AFTER when it
 * was created without one (0 or null: never); the time counts from its last status change at the earliest, so a
 * workspace just woken or started is not suspended at once. Each round (one replica at a time, under an advisory
 * lock) writes this process's buffered activity, then queues an ordinary `suspend` operation for every idle
 * `online` or `degraded` managed workspace with no operation under way; the operation ends `suspended`, and the next
 * A2A request or `POST /workspaces/:id/start` wakes it.
 *
 * Other replicas write their activity up to one flush interval late (`ActivityTracker`), and a message one of them is
 * delivering right now is not in the database at all until its next flush. So a round that finds idle workspaces
 * looks again, only at those, once two flush intervals have passed (the replicas share the interval, which follows
 * HEARTBEAT_STALE_AFTER): every replica has written what it had by then, its calls in flight as active now, with an
 * interval to spare for the write itself. Only those still idle are suspended, so a message any replica took before
 * that second look keeps its target awake; one that comes after the suspend is queued finds the workspace `stopping`
 * and waits for the wake. What remains is the race a single replica has too: a message taken in the milliseconds
 * between the second look and the replica hearing of `stopping`.
 */
export class IdleSuspender {
  private timer: NodeJS.Timeout | null = null;
  private sweeping: Promise<unknown> | null = null;
  /** Ends a round's wait for the other replicas' activity at once (`stop`): that round then suspends nothing. */
  private readonly stopping = new AbortController();

  constructor(
    private readonly deps: PlatformDeps,
    private readonly workspaces: WorkspaceService,
    private readonly activity: ActivityTracker,
  ) {}

  start(intervalMs: number): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.sweeping) return;
      this.sweeping = this.sweep()
        .catch((error: unknown) => this.deps.logger.error({ err: error }, "idle sweep failed"))
        .finally(() => {
          this.sweeping = null;
        });
    }, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.sweeping;
  }

  /** One round: the ids of the workspaces it queued a suspend for (none when another replica holds the lock). */
  async sweep(): Promise<string[]> {
    await this.activity.flush();
    const outcome = await this.deps.advisoryLock(TENANT_IDLE_LOCK, () => this.suspendIdle());
    return outcome.acquired ? outcome.value : [];
  }

  private async suspendIdle(): Promise<string[]> {
    const candidates = await this.idleNow();
    if (candidates.length === 0) return [];
    if (!(await this.othersFlushed())) return [];
    await this.activity.flush();
    const stillIdle = await this.idleNow(candidates.map((row) => row.id));
    return this.suspend(stillIdle);
  }

  /** Waits two activity flush intervals; false when `stop` ended the wait first. */
  private othersFlushed(): Promise<boolean> {
    const { signal } = this.stopping;
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve(!signal.aborted);
      };
      const timer = setTimeout(done, 2 * this.activity.intervalMs);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  /** Idle workspaces with no operation under way (among `among` when given), by the activity written so far. */
  private idleNow(among?: string[]): Promise<{ id: string; seconds: number }[]> {
    const { db, settings, clock } = this.deps;
    const fallbackSeconds = settings.idleSuspendAfterMs ? Math.ceil(settings.idleSuspendAfterMs / 1000) : 0;
    const seconds = sql<number>`coalesce(${workspaces.idleSuspendSeconds}, ${fallbackSeconds}::integer)`;
    const now = sql`${clock.now().toISOString()}::timestamptz`;
    const idleSince = sql`greatest(${workspaces.updatedAt}, coalesce(${workspaces.lastActivityAt}, ${workspaces.updatedAt}))`;
    return db
      .select({ id: workspaces.id, seconds })
      .from(workspaces)
      .where(
        and(
          eq(workspaces.orgId, settings.orgId),
          among ? inArray(workspaces.id, among) : undefined,
          inArray(workspaces.status, ["online", "degraded"]),
          ne(workspaces.runtime, EXTERNAL_RUNTIME),
          sql`${seconds} > 0`,
          sql`${idleSince} < ${now} - make_interval(secs => ${seconds})`,
          notExists(
            db
              .select({ one: sql`1` })
              .from(operations)
              .where(
                and(
                  eq(operations.workspaceId, workspaces.id),
                  inArray(operations.status, ["pending", "running"]),
                ),
              ),
          ),
        ),
      );
  }

  /** Queues a suspend for each workspace; the ids of those it queued one for. */
  private async suspend(idle: { id: string; seconds: number }[]): Promise<string[]> {
    const { logger } = this.deps;
    const queued: string[] = [];
    for (const row of idle) {
      try {
        await this.workspaces.requestLifecycle(row.id, "suspend", undefined, {
          reason: `idle for ${row.seconds} s`,
        });
        queued.push(row.id);
        logger.info({ workspaceId: row.id, idleSeconds: row.seconds }, "suspending idle workspace");
      } catch (error) {
        // Its status moved since it was read (a stop, a delete): nothing to suspend.
        if (error instanceof DomainError && error.code === "invalid_transition") continue;
        throw error;
      }
    }
    return queued;
  }
}

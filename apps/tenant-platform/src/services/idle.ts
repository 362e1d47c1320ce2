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
 */
export class IdleSuspender {
  private timer: NodeJS.Timeout | null = null;
  private sweeping: Promise<unknown> | null = null;

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
    const { db, settings, clock, logger } = this.deps;
    const fallbackSeconds = settings.idleSuspendAfterMs ? Math.ceil(settings.idleSuspendAfterMs / 1000) : 0;
    const seconds = sql<number>`coalesce(${workspaces.idleSuspendSeconds}, ${fallbackSeconds}::integer)`;
    const now = sql`${clock.now().toISOString()}::timestamptz`;
    const idleSince = sql`greatest(${workspaces.updatedAt}, coalesce(${workspaces.lastActivityAt}, ${workspaces.updatedAt}))`;
    const idle = await db
      .select({ id: workspaces.id, seconds })
      .from(workspaces)
      .where(
        and(
          eq(workspaces.orgId, settings.orgId),
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

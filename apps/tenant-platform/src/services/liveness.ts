import { EXTERNAL_RUNTIME, LIVE_STATUSES } from "@molecule/contracts";
import { operations, workspaces } from "@molecule/db";
import { and, eq, inArray, isNotNull, lt, ne, notExists, sql } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";
import type { HeartbeatBatcher } from "./heartbeats.ts";
import { transitionWorkspace } from "./transitions.ts";

/**
 * How often an agent should heartbeat: a third of the stale threshold survives one lost beat; at least 1 s, at most
 * 30 s. Told to managed workspaces as `HEARTBEAT_INTERVAL_SECONDS`, to external ones in the connection bundle, and
 * to every agent in the register and heartbeat answers (`heartbeat_interval_seconds`).
 */
export function heartbeatIntervalSeconds(staleAfterMs: number): number {
  return Math.min(30, Math.max(1, Math.floor(staleAfterMs / 3000)));
}

/** The advisory lock of the sweep: with N replicas, one sweeps at a time and the others skip that round. */
export const TENANT_LIVENESS_LOCK = 74_201_325;

/**
 * Notices workspaces that went quiet: heartbeats older than the stale threshold move `online` to `offline`,
 * and a process the backend reports gone (container exited or removed) is marked `offline` with the reason.
 * Each replica writes its own buffered heartbeats first; the sweep itself runs on one replica at a time.
 */
export class LivenessSweeper {
  private timer: NodeJS.Timeout | null = null;
  private sweeping: Promise<unknown> | null = null;

  constructor(
    private readonly deps: PlatformDeps,
    private readonly intervalMs: number,
    /** This process's buffered heartbeats, written before the stale ones are looked for. */
    private readonly heartbeats: HeartbeatBatcher | null = null,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      if (this.sweeping) return;
      this.sweeping = this.sweep()
        .catch((error: unknown) => this.deps.logger.error({ err: error }, "status sweep failed"))
        .finally(() => {
          this.sweeping = null;
        });
    }, this.intervalMs);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.sweeping;
  }

  /** One round: false when another replica holds the sweep's lock (it sweeps; this one skips the round). */
  async sweep(): Promise<boolean> {
    await this.heartbeats?.flush();
    const outcome = await this.deps.advisoryLock(TENANT_LIVENESS_LOCK, async () => {
      await this.markStaleNow();
      await this.checkBackend();
    });
    if (!outcome.acquired) this.deps.logger.debug("status sweep skipped: another replica is sweeping");
    return outcome.acquired;
  }

  /**
   * Heartbeats buffered in this process are written first; other replicas' buffers are at most one flush interval
   * (≤ 1 s, a tenth of the threshold) behind, which the threshold absorbs. 0 when another replica is sweeping.
   */
  async markStale(): Promise<number> {
    await this.heartbeats?.flush();
    const outcome = await this.deps.advisoryLock(TENANT_LIVENESS_LOCK, () => this.markStaleNow());
    return outcome.acquired ? outcome.value : 0;
  }

  private async markStaleNow(): Promise<number> {
    const { db, clock, settings } = this.deps;
    const cutoff = new Date(clock.now().getTime() - settings.staleAfterMs);
    const reason = `no heartbeat for over ${Math.round(settings.staleAfterMs / 1000)} s`;
    const stale = await db
      .update(workspaces)
      .set({ status: "offline", statusReason: reason, updatedAt: new Date() })
      .where(
        and(
          eq(workspaces.orgId, settings.orgId),
          inArray(workspaces.status, ["online", "degraded"]),
          isNotNull(workspaces.lastHeartbeatAt),
          lt(workspaces.lastHeartbeatAt, cutoff),
        ),
      )
      .returning({ id: workspaces.id, lastHeartbeatAt: workspaces.lastHeartbeatAt });
    for (const row of stale) {
      this.deps.logger.info({ workspaceId: row.id }, "workspace went offline: heartbeats stopped");
      const lastHeartbeatAt = row.lastHeartbeatAt?.toISOString() ?? null;
      this.deps.events.publish({
        type: "workspace.heartbeat_missed",
        workspaceId: row.id,
        data: { lastHeartbeatAt, staleAfterMs: settings.staleAfterMs },
      });
      this.deps.events.publish({
        type: "workspace.status",
        workspaceId: row.id,
        data: { to: "offline", reason },
      });
    }
    return stale.length;
  }

  /**
   * Asks the backend about every workspace that should be running and has no operation under way. External
   * workspaces are not the backend's: only their heartbeats tell.
   */
  async checkBackend(): Promise<void> {
    const { db, provisioner, settings } = this.deps;
    const rows = await db
      .select()
      .from(workspaces)
      .where(
        and(
          eq(workspaces.orgId, settings.orgId),
          inArray(workspaces.status, [...LIVE_STATUSES]),
          ne(workspaces.runtime, EXTERNAL_RUNTIME),
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
    for (const row of rows) {
      const status = await provisioner.status({
        workspaceId: row.id,
        orgId: row.orgId,
        handle: row.handle ?? null,
      });
      if (status.state !== "stopped" && status.state !== "missing") continue;
      const reason =
        status.state === "missing"
          ? "the workspace's container is gone"
          : `the workspace process exited${status.detail ? ` (${status.detail})` : ""}`;
      if (row.status === "offline") {
        if (row.statusReason !== reason) {
          await db.update(workspaces).set({ statusReason: reason }).where(eq(workspaces.id, row.id));
        }
        continue;
      }
      if (await transitionWorkspace(this.deps, row.id, "offline", { from: [row.status], reason })) {
        this.deps.logger.warn({ workspaceId: row.id, reason }, "workspace went offline");
      }
    }
  }
}

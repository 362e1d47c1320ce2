import { backoffDelay, TIERS, type Tier } from "@molecule/contracts";
import { type PoolMemberRow, type PoolRow, poolMembers, pools, workspaceResources } from "@molecule/db";
import { hashToken, mintToken } from "@molecule/identity";
import {
  describeFailure,
  type Handle,
  ProvisionerError,
  poolLabel,
  specScrubber,
  suspendsTier,
  type WorkspaceSpec,
} from "@molecule/provisioner-core";
import { releaseAudited, tableAudit } from "@molecule/service-kit/audit";
import { and, desc, eq, inArray, isNull, lt, ne, or, sql } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";
import { becomesReady, LIVE_MEMBER_STATES, MEMBER_QUIET_MS } from "./pools.ts";
import { workspaceEnv, workspaceImage } from "./workspace-env.ts";

/** The advisory lock of the filler: with N replicas, one fills at a time and the others skip the round. */
export const TENANT_POOL_LOCK = 74_201_333;
/** How long a member may take from its start to its agent's first wait before it is replaced. */
export const MEMBER_START_TIMEOUT_MS = 5 * 60_000;
/** Members started (or destroyed) side by side in one round. */
const PARALLEL = 4;
/** After a round whose member start failed, the pool waits this long before the next attempt, doubled per failure… */
export const POOL_RETRY_BASE_MS = 5_000;
/** …up to this. */
export const POOL_RETRY_MAX_MS = 5 * 60_000;
/** A backend's Retry-After is honoured up to this: a bogus one must not stop a pool for days. */
export const POOL_RETRY_AFTER_CAP_MS = 60 * 60_000;

/**
 * How long a pool waits after its `failures`-th failed round in a row: the backoff, or the backend's Retry-After when
 * that asks for longer (capped).
 */
export function poolRetryDelay(failures: number, retryAfterMs?: number): number {
  const backoff = backoffDelay(failures, {
    baseMs: POOL_RETRY_BASE_MS,
    maxMs: POOL_RETRY_MAX_MS,
    jitter: "none",
  });
  return Math.max(backoff, Math.min(retryAfterMs ?? 0, POOL_RETRY_AFTER_CAP_MS));
}

export interface FillReport {
  started: number;
  failed: number;
  removed: number;
}

/**
 * A filler that has not renewed its claim on a pool's image for this long is taken for gone (its replicas were
 * stopped): any other filler may then claim the pool for its own image.
 */
export const POOL_IMAGE_OWNER_QUIET_MS = 60_000;

/** A failed member start as the pool records it: scrubbed of the member's credential. */
interface StartFailure {
  code: string;
  message: string;
  retryAfterMs: number | undefined;
}

const poolKey = (runtime: string, tier: number) => `${runtime}\u0000${tier}`;

async function inBatches<T>(
  items: readonly T[],
  size: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

/**
 * Keeps every warm pool at its target: starts members it lacks, and destroys those it no longer wants (the pool
 * shrank, its image changed, the member's agent went quiet or never came up). One replica at a time, under an
 * advisory lock; a round finishes every start it began before it lets the lock go, so a `starting` member without a
 * handle found at the start of a round is one a dead process left: it is destroyed (by its labels) and replaced.
 *
 * Each member is started as the workspace its id names, with its own fresh volume (docker) or machine and volume
 * (flyio), an environment with no secret of anyone's and a pool token as its only credential. The volume is never
 * shared: it goes to the one create that claims the member, or is destroyed with it.
 */
export class PoolFiller {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  private again = false;
  private readonly startFailures;
  /** When this filler first ran: the newest filler's image is its pools'. */
  private startedAt: Date | null = null;

  constructor(
    private readonly deps: PlatformDeps,
    private readonly intervalMs = 5_000,
  ) {
    this.startFailures = deps.metrics.counter(
      "molecule_pool_member_start_failures_total",
      "Warm pool members whose start failed, by the backend's error code (the pool then backs off)",
      ["runtime", "tier", "code"],
    );
  }

  start(): void {
    this.timer = setInterval(() => this.wake(), this.intervalMs);
    this.wake();
  }

  /** A round now (or right after the one under way); nothing when the loop is not started. */
  wake(): void {
    if (!this.timer) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.fill()
      .catch((error: unknown) => this.deps.logger.error({ err: error }, "pool fill failed"))
      .finally(() => {
        this.running = null;
        if (this.again && this.timer) {
          this.again = false;
          this.wake();
        }
      });
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One round; null when another replica holds the filler's lock. */
  async fill(): Promise<FillReport | null> {
    // Outside the lock, so a filler renews its claim even while another replica's long round holds the lock.
    await this.claimImages();
    const outcome = await this.deps.advisoryLock(TENANT_POOL_LOCK, () => this.fillNow());
    if (!outcome.acquired) this.deps.logger.debug("pool fill skipped: another replica is filling");
    return outcome.acquired ? outcome.value : null;
  }

  private async fillNow(): Promise<FillReport> {
    await this.retireUnwanted();
    const removed = await this.destroyRemoving();
    const { started, failed } = await this.startMissing();
    await this.suspendReady();
    return { started, failed, removed };
  }

  /**
   * Decides each pool's image, the one place replicas on different WORKSPACE_IMAGE_TAGs (a rolling upgrade) agree on:
   * this filler's own image when the pool has none yet, when this filler started after the one whose image it has
   * (the newest replica's wins: a rollback is a newer start too), or when that one has not renewed its claim for
   * POOL_IMAGE_OWNER_QUIET_MS (its replicas are gone). A filler on the pool's image renews the claim. Each UPDATE is a
   * compare-and-set, so replicas claiming at once leave the newest's.
   */
  private async claimImages(): Promise<void> {
    const { db, clock, settings, logger } = this.deps;
    const now = clock.now();
    this.startedAt ??= now;
    const startedAt = this.startedAt;
    const rows = await db.select().from(pools).where(eq(pools.orgId, settings.orgId));
    for (const row of rows) {
      const mine = workspaceImage(settings, row.runtime);
      const claimed = await db
        .update(pools)
        .set({
          image: mine,
          imageSince: sql`CASE WHEN ${pools.image} = ${mine} AND ${pools.imageSince} > ${startedAt.toISOString()}::timestamptz THEN ${pools.imageSince} ELSE ${startedAt.toISOString()}::timestamptz END`,
          imageSeenAt: now,
        })
        .where(
          and(
            eq(pools.orgId, row.orgId),
            eq(pools.runtime, row.runtime),
            eq(pools.tier, row.tier),
            or(
              isNull(pools.image),
              eq(pools.image, mine),
              lt(pools.imageSince, startedAt),
              lt(pools.imageSeenAt, new Date(now.getTime() - POOL_IMAGE_OWNER_QUIET_MS)),
            ),
          ),
        )
        .returning({ runtime: pools.runtime });
      if (claimed.length > 0 && row.image !== null && row.image !== mine) {
        logger.info(
          { runtime: row.runtime, tier: row.tier, from: row.image, to: mine },
          "pool image taken over: members on the other image are replaced",
        );
      }
    }
  }

  /** Marks `removing` every live member the pools no longer want; a member claimed meanwhile is left alone. */
  private async retireUnwanted(): Promise<void> {
    const { db, clock, settings } = this.deps;
    const now = clock.now().getTime();
    const members = await db
      .select()
      .from(poolMembers)
      .where(and(eq(poolMembers.orgId, settings.orgId), inArray(poolMembers.state, [...LIVE_MEMBER_STATES])))
      .orderBy(desc(poolMembers.createdAt));
    const targets = await db.select().from(pools).where(eq(pools.orgId, settings.orgId));
    const size = new Map(targets.map((pool) => [poolKey(pool.runtime, pool.tier), pool.size]));
    const image = new Map(targets.map((pool) => [poolKey(pool.runtime, pool.tier), pool.image]));
    const unwanted: string[] = [];
    const kept = new Map<string, PoolMemberRow[]>();
    for (const member of members) {
      const broken =
        member.image !==
          (image.get(poolKey(member.runtime, member.tier)) ?? workspaceImage(settings, member.runtime)) ||
        (member.handle === null && member.state === "starting") ||
        (member.state === "starting" && now - member.createdAt.getTime() > MEMBER_START_TIMEOUT_MS) ||
        // A suspended member's agent is frozen mid-wait: its silence is by design.
        (member.suspendedAt === null &&
          member.state !== "suspending" &&
          member.agentWaitingAt !== null &&
          now - member.agentWaitingAt.getTime() > MEMBER_QUIET_MS);
      if (broken) {
        unwanted.push(member.id);
        continue;
      }
      const key = poolKey(member.runtime, member.tier);
      kept.set(key, [...(kept.get(key) ?? []), member]);
    }
    for (const [key, live] of kept) {
      const surplus = live.length - (size.get(key) ?? 0);
      if (surplus <= 0) continue;
      // The ones not ready yet go first, then the newest ready ones: the oldest ready are claimed first anyway.
      const order = [
        ...live.filter((m) => m.state === "starting"),
        ...live.filter((m) => m.state === "ready"),
      ];
      unwanted.push(...order.slice(0, surplus).map((member) => member.id));
    }
    if (unwanted.length === 0) return;
    await db
      .update(poolMembers)
      .set({ state: "removing" })
      .where(and(inArray(poolMembers.id, unwanted), inArray(poolMembers.state, [...LIVE_MEMBER_STATES])));
  }

  /** Destroys each `removing` member on the backend, then forgets it. A failure is retried next round. */
  private async destroyRemoving(): Promise<number> {
    const { db, provisioner, settings, logger, clock } = this.deps;
    const removing = await db
      .select()
      .from(poolMembers)
      .where(and(eq(poolMembers.orgId, settings.orgId), eq(poolMembers.state, "removing")));
    let removed = 0;
    await inBatches(removing, PARALLEL, async (member) => {
      try {
        await provisioner.destroy({
          workspaceId: member.id,
          orgId: member.orgId,
          handle: member.handle as Handle | null,
        });
        await db.transaction(async (tx) => {
          await releaseAudited(tx, workspaceResources, { subjectId: member.id }, clock.now());
          await tx
            .delete(poolMembers)
            .where(and(eq(poolMembers.id, member.id), eq(poolMembers.state, "removing")));
        });
        removed++;
        logger.info(
          { workspaceId: member.id, runtime: member.runtime, tier: member.tier },
          "pool member destroyed",
        );
      } catch (error) {
        const failure = describeFailure(error, "the backend refused the destroy");
        logger.warn(
          { workspaceId: member.id, ...failure.log },
          "pool member not destroyed; retried next round",
        );
      }
    });
    return removed;
  }

  /**
   * Starts the members each pool lacks, side by side within a bound; each start is finished before returning. A pool
   * backing off is passed by until its `next_attempt_at`; after a failure, one member is tried before the rest.
   */
  private async startMissing(): Promise<{ started: number; failed: number }> {
    const { db, settings, clock } = this.deps;
    const targets = await db
      .select()
      .from(pools)
      .where(and(eq(pools.orgId, settings.orgId), ne(pools.size, 0)));
    const live = await db
      .select({ runtime: poolMembers.runtime, tier: poolMembers.tier, n: sql<number>`count(*)::int` })
      .from(poolMembers)
      .where(and(eq(poolMembers.orgId, settings.orgId), inArray(poolMembers.state, [...LIVE_MEMBER_STATES])))
      .groupBy(poolMembers.runtime, poolMembers.tier);
    const have = new Map(live.map((row) => [poolKey(row.runtime, row.tier), row.n]));
    const now = clock.now();
    const wanted: PoolRow[] = [];
    for (const pool of targets) {
      if (!settings.allowedRuntimes.includes(pool.runtime)) continue;
      if (pool.nextAttemptAt && pool.nextAttemptAt > now) continue;
      // Members of a pool on another image are started by the replicas on that image.
      if (pool.image !== null && pool.image !== workspaceImage(settings, pool.runtime)) continue;
      const missing = pool.size - (have.get(poolKey(pool.runtime, pool.tier)) ?? 0);
      // A pool that failed last time tries one member: the rest follow once one starts.
      for (let i = 0; i < (pool.failures > 0 ? Math.min(missing, 1) : missing); i++) wanted.push(pool);
    }
    let started = 0;
    let failed = 0;
    const outcomes = new Map<PoolRow, { started: number; failure: StartFailure | null }>();
    await inBatches(wanted, PARALLEL, async (pool) => {
      const outcome = outcomes.get(pool) ?? { started: 0, failure: null };
      outcomes.set(pool, outcome);
      // Once a start of this pool failed in this round, the later ones would fail alike.
      if (outcome.failure) return;
      const failure = await this.startMember(pool.runtime, pool.tier as Tier);
      if (failure) {
        failed++;
        outcome.failure = failure;
      } else {
        started++;
        outcome.started++;
      }
    });
    for (const [pool, outcome] of outcomes) await this.recordOutcome(pool, outcome);
    return { started, failed };
  }

  /**
   * A round's outcome for one pool: a failure makes it wait (longer at each failure in a row), a round with only
   * successes clears what the failures left. The failure is not recorded when a PUT reset the pool meanwhile.
   */
  private async recordOutcome(
    pool: PoolRow,
    outcome: { started: number; failure: StartFailure | null },
  ): Promise<void> {
    const { db, clock, logger } = this.deps;
    const poolOf = and(
      eq(pools.orgId, pool.orgId),
      eq(pools.runtime, pool.runtime),
      eq(pools.tier, pool.tier),
    );
    const { failure } = outcome;
    if (!failure) {
      if (pool.failures === 0 && pool.lastError === null) return;
      await db
        .update(pools)
        .set({ failures: 0, nextAttemptAt: null, lastError: null, lastErrorCode: null, lastErrorAt: null })
        .where(poolOf);
      return;
    }
    const failures = pool.failures + 1;
    const now = clock.now();
    const nextAttemptAt = new Date(now.getTime() + poolRetryDelay(failures, failure.retryAfterMs));
    await db
      .update(pools)
      .set({
        failures,
        nextAttemptAt,
        lastError: failure.message,
        lastErrorCode: failure.code,
        lastErrorAt: now,
      })
      .where(and(poolOf, eq(pools.failures, pool.failures)));
    logger.warn(
      {
        runtime: pool.runtime,
        tier: pool.tier,
        code: failure.code,
        failures,
        nextAttemptAt: nextAttemptAt.toISOString(),
      },
      "pool backing off after a failed member start",
    );
  }

  /**
   * With `suspendPoolMembers` (flyio) and a backend that can suspend, ready members are suspended: they wait at no
   * CPU cost and a claim resumes them. Each is `suspending` meanwhile, which claims pass by; one the backend stopped instead is replaced.
   * Members of a tier the backend would stop instead (Fly, above its memory limit) are left running: stopping and
   * replacing them would start a new member every round.
   */
  private async suspendReady(): Promise<void> {
    const { db, provisioner, settings, logger, clock } = this.deps;
    if (!settings.suspendPoolMembers) return;
    const capabilities = provisioner.capabilities();
    const tiers = TIERS.filter((tier) => suspendsTier(capabilities, tier));
    if (tiers.length === 0) return;
    const taken = await db
      .update(poolMembers)
      .set({ state: "suspending" })
      .where(
        and(
          eq(poolMembers.orgId, settings.orgId),
          eq(poolMembers.state, "ready"),
          isNull(poolMembers.suspendedAt),
          inArray(poolMembers.tier, tiers),
        ),
      )
      .returning();
    await inBatches(taken, PARALLEL, async (member) => {
      const ref = { workspaceId: member.id, orgId: member.orgId, handle: member.handle as Handle | null };
      let suspended = false;
      try {
        const result = await provisioner.suspend(ref);
        suspended = result.suspended;
        if (!suspended)
          logger.warn({ workspaceId: member.id, reason: result.reason }, "pool member not suspended");
      } catch (error) {
        const failure = describeFailure(error, "the backend could not suspend a pool member");
        logger.warn({ workspaceId: member.id, ...failure.log }, "pool member not suspended; replaced");
      }
      await db
        .update(poolMembers)
        .set(suspended ? { state: "ready", suspendedAt: clock.now() } : { state: "removing" })
        .where(and(eq(poolMembers.id, member.id), eq(poolMembers.state, "suspending")));
    });
  }

  /**
   * One new member: its row (with its pool token's hash) first, then the backend call, then its handle. Null when it
   * started; else why not (its row is left `removing`, for the next round to destroy what the backend made of it).
   */
  private async startMember(runtime: string, tier: Tier): Promise<StartFailure | null> {
    const { db, provisioner, settings, ids, clock, logger } = this.deps;
    const id = ids.next("ws");
    const poolToken = mintToken("mpt");
    await db.insert(poolMembers).values({
      id,
      orgId: settings.orgId,
      runtime,
      tier,
      state: "starting",
      image: workspaceImage(settings, runtime),
      waitTokenHash: hashToken(poolToken),
      createdAt: clock.now(),
    });
    const spec: WorkspaceSpec = {
      workspaceId: id,
      orgId: settings.orgId,
      deployment: settings.deployment,
      runtime,
      tier,
      env: { ...workspaceEnv(settings, id), WORKSPACE_POOL_TOKEN: poolToken },
      secretKeys: ["WORKSPACE_POOL_TOKEN"],
      metadata: {},
      pool: poolLabel(runtime, tier),
    };
    try {
      const handle = await provisioner.provision(spec, null, {
        operationId: id,
        idempotencyKey: `pool:${id}`,
        audit: tableAudit(
          db,
          workspaceResources,
          { subjectId: id, orgId: settings.orgId, backend: provisioner.name },
          () => clock.now(),
        ),
      });
      await db
        .update(poolMembers)
        .set({ handle, ...becomesReady("agentWaitingAt") })
        .where(and(eq(poolMembers.id, id), eq(poolMembers.state, "starting")));
      logger.info({ workspaceId: id, runtime, tier }, "pool member started");
      return null;
    } catch (error) {
      // The backend scrubs the spec's values (the pool token) from its errors; this scrubs them again all the same.
      const failure = describeFailure(error, "the backend could not start a pool member", specScrubber(spec));
      logger.warn({ workspaceId: id, runtime, tier, ...failure.log }, "pool member failed to start");
      this.startFailures.labels(runtime, String(tier), failure.code).inc();
      await db
        .update(poolMembers)
        .set({ state: "removing" })
        .where(and(eq(poolMembers.id, id), inArray(poolMembers.state, [...LIVE_MEMBER_STATES])));
      const retryAfterMs = error instanceof ProvisionerError ? error.details.retryAfterMs : undefined;
      return {
        code: failure.code,
        message: failure.message,
        retryAfterMs: typeof retryAfterMs === "number" ? retryAfterMs : undefined,
      };
    }
  }
}

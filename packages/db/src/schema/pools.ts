import { sql } from "drizzle-orm";
import { check, index, integer, jsonb, pgTable, primaryKey, text, timestamp } from "drizzle-orm/pg-core";

/** A warm pool's target, set by the operator (`PUT /pools`): `size` members of (runtime, tier) kept ready. */
export const pools = pgTable(
  "pools",
  {
    orgId: text("org_id").notNull(),
    runtime: text("runtime").notNull(),
    tier: integer("tier").notNull(),
    size: integer("size").notNull(),
    /** Why the filler's last attempt to start a member failed (scrubbed); cleared by the next success or PUT. */
    lastError: text("last_error"),
    /** That failure's code (the backend's, e.g. `image_unavailable`, `rate_limited`) and when it happened. */
    lastErrorCode: text("last_error_code"),
    lastErrorAt: timestamp("last_error_at", { withTimezone: true }),
    /** Rounds in a row whose member start failed: the filler's backoff grows with it. */
    failures: integer("failures").notNull().default(0),
    /** The filler starts no member of this pool before this (its backoff, or the backend's Retry-After). */
    nextAttemptAt: timestamp("next_attempt_at", { withTimezone: true }),
    /**
     * The image the pool fills with (null until a filler claims it): the newest running filler's, so replicas on two
     * WORKSPACE_IMAGE_TAGs agree on which members are old. `imageSince` is when that filler started, `imageSeenAt`
     * when it last renewed its claim.
     */
    image: text("image"),
    imageSince: timestamp("image_since", { withTimezone: true }),
    imageSeenAt: timestamp("image_seen_at", { withTimezone: true }),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [primaryKey({ columns: [table.orgId, table.runtime, table.tier] })],
);

/**
 * One pre-started workspace of a pool. Its id is the workspace id it was started as (its container, volume and
 * agent address are named from it) and, once claimed, the id of the workspace row the claim creates: a member is
 * claimed at most once and never returns to its pool. `starting` until both its backend call returned (`handle`) and
 * its agent asked for its claim (`agent_waiting_at`); then `ready` (`suspending` for the while the filler suspends it,
 * where the backend can); `claimed` by a create; `removing` while the filler
 * destroys it (shrink, image change, agent gone quiet, failed start).
 */
export const poolMembers = pgTable(
  "pool_members",
  {
    id: text("id").primaryKey(),
    orgId: text("org_id").notNull(),
    runtime: text("runtime").notNull(),
    tier: integer("tier").notNull(),
    state: text("state").notNull(),
    /** The image reference it was started on: a member on another than the pool's current one is replaced. */
    image: text("image").notNull(),
    handle: jsonb("handle").$type<({ backend: string } & Record<string, unknown>) | null>(),
    /** SHA-256 of the pool token injected into it, the only credential its agent has until it is claimed. */
    waitTokenHash: text("wait_token_hash").notNull(),
    /** The last time its agent asked for its claim (each long poll renews it). */
    agentWaitingAt: timestamp("agent_waiting_at", { withTimezone: true }),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    readyAt: timestamp("ready_at", { withTimezone: true }),
    claimedAt: timestamp("claimed_at", { withTimezone: true }),
    /**
     * When the filler suspended it, ready, on a backend that can suspend (Fly): its agent is frozen mid-wait, so its
     * silence is not taken for death, and a claim resumes it (a `start` operation) before its agent is answered.
     */
    suspendedAt: timestamp("suspended_at", { withTimezone: true }),
  },
  (table) => [
    index("pool_members_pool_state_idx").on(table.orgId, table.runtime, table.tier, table.state),
    check(
      "pool_members_state_check",
      sql`${table.state} IN ('starting', 'ready', 'suspending', 'claimed', 'removing')`,
    ),
  ],
);

export type PoolRow = typeof pools.$inferSelect;
export type PoolMemberRow = typeof poolMembers.$inferSelect;

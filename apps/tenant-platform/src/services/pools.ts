import { timingSafeEqual } from "node:crypto";
import {
  type AwaitClaimBody,
  type ClaimAnswer,
  DomainError,
  EXTERNAL_RUNTIME,
  type PoolView,
  type PutPoolBody,
  type Tier,
} from "@molecule/contracts";
import {
  operations,
  type PoolMemberRow,
  poolMembers,
  pools,
  workspaces,
  workspaceTokens,
} from "@molecule/db";
import { hashToken } from "@molecule/identity";
import { type Handle, suspendsTier } from "@molecule/provisioner-core";
import type { ChangeFeed } from "@molecule/service-kit/cluster";
import type { RunnerDb } from "@molecule/service-kit/runner";
import { and, asc, count, eq, gt, inArray, isNotNull, isNull, ne, or, sql } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";
import { openOperationInput } from "./operation-input.ts";

/** How long one `POST /registry/claim` waits for a claim when the agent does not say (it asks again after). */
export const DEFAULT_CLAIM_WAIT_SECONDS = 20;
/**
 * A member whose agent has not asked for its claim for this long is taken for dead: never handed out, and replaced
 * by the filler. Three waits' worth: an agent asks again as soon as a wait ends empty.
 */
export const MEMBER_QUIET_MS = 3 * DEFAULT_CLAIM_WAIT_SECONDS * 1000;
/** How often a waiting claim re-reads its member when no change it hears of woke it (a feed that is down). */
const CLAIM_POLL_MS = 2_000;

/** The statuses of a member that a pool still holds (claimed and removing ones are no longer its). */
export const LIVE_MEMBER_STATES = ["starting", "ready", "suspending"] as const;

/**
 * Moves a member from `starting` to `ready` once both halves are in: its backend call returned (`handle`) and its
 * agent asked for its claim (`agent_waiting_at`). Whichever arrives second makes the move, in the UPDATE that writes
 * its own half: `other` is the column the other side writes (a SET expression sees the row as it was before).
 */
export function becomesReady(other: "handle" | "agentWaitingAt") {
  const otherIn = other === "handle" ? poolMembers.handle : poolMembers.agentWaitingAt;
  const moves = sql`${poolMembers.state} = 'starting' AND ${otherIn} IS NOT NULL`;
  return {
    state: sql`CASE WHEN ${moves} THEN 'ready' ELSE ${poolMembers.state} END`,
    readyAt: sql`CASE WHEN ${moves} THEN now() ELSE ${poolMembers.readyAt} END`,
  };
}

/**
 * Takes one ready member of the pool of `runtime` and `tier` for a create, inside the create's transaction: the row is
 * locked (`FOR UPDATE SKIP LOCKED`, so concurrent creates each take another member or none) and marked claimed in the
 * same transaction as the workspace row the create inserts under the member's id. Null when none is ready: the
 * create provisions cold.
 */
export async function claimReadyMember(
  tx: RunnerDb,
  orgId: string,
  runtime: string,
  tier: number,
  now: Date,
): Promise<{ id: string; handle: Handle | null; suspended: boolean } | null> {
  // One statement (one round trip): the candidate is picked and locked by the subquery, then marked claimed.
  const candidate = tx
    .select({ id: poolMembers.id })
    .from(poolMembers)
    .where(
      and(
        eq(poolMembers.orgId, orgId),
        eq(poolMembers.runtime, runtime),
        eq(poolMembers.tier, tier),
        eq(poolMembers.state, "ready"),
        // A member whose agent went quiet may be dead (the filler replaces it); a suspended one is quiet by design.
        or(
          isNotNull(poolMembers.suspendedAt),
          gt(poolMembers.agentWaitingAt, new Date(now.getTime() - MEMBER_QUIET_MS)),
        ),
        // Not on an image the pool has moved off (a newer replica took it over): the filler retires those, and a
        // create must not get the old image in the meantime.
        sql`not exists (select 1 from ${pools} where ${pools.orgId} = ${poolMembers.orgId} and ${pools.runtime} = ${poolMembers.runtime} and ${pools.tier} = ${poolMembers.tier} and ${pools.image} is not null and ${pools.image} <> ${poolMembers.image})`,
      ),
    )
    .orderBy(asc(poolMembers.readyAt))
    .limit(1)
    .for("update", { skipLocked: true });
  const [claimed] = await tx
    .update(poolMembers)
    .set({ state: "claimed", claimedAt: now })
    .where(sql`${poolMembers.id} = (${candidate})`)
    .returning({ id: poolMembers.id, handle: poolMembers.handle, suspendedAt: poolMembers.suspendedAt });
  if (!claimed) return null;
  return {
    id: claimed.id,
    handle: claimed.handle as Handle | null,
    suspended: claimed.suspendedAt !== null,
  };
}

/** A wait that ends after its time, or at once when woken (a wake while nobody waits is kept until `reset`). */
class Wakeup {
  private woken = false;
  private waiting: (() => void) | null = null;

  wake(): void {
    this.woken = true;
    this.waiting?.();
  }

  reset(): void {
    this.woken = false;
  }

  within(ms: number, signal: AbortSignal | undefined): Promise<void> {
    if (this.woken || signal?.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const end = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", end);
        this.waiting = null;
        resolve();
      };
      const timer = setTimeout(end, ms);
      signal?.addEventListener("abort", end, { once: true });
      this.waiting = end;
    });
  }
}

function sameHash(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a, "hex"), Buffer.from(b, "hex"));
}

/** The operator's side of warm pools (`PUT /pools`, `GET /pools`) and the waiting agent's (`POST /registry/claim`). */
export class PoolService {
  constructor(
    private readonly deps: PlatformDeps,
    /** Tells the filler a pool changed (a new target, a claim), so it acts now rather than at its next round. */
    private readonly onPoolChanged: () => void = () => {},
    /** Every replica's workspace inserts (a claim on another replica) wake a waiting claim on this one. */
    private readonly changes: ChangeFeed | null = null,
  ) {}

  async put(body: PutPoolBody): Promise<PoolView> {
    const { db, settings, clock } = this.deps;
    if (body.runtime === EXTERNAL_RUNTIME || !settings.allowedRuntimes.includes(body.runtime)) {
      throw new DomainError(
        "bad_request",
        `runtime "${body.runtime}" cannot have a pool; allowed runtimes: ${settings.allowedRuntimes.join(", ")}`,
        { field: "runtime" },
      );
    }
    const { provisioner } = this.deps;
    if (
      provisioner.name === "controlplane" &&
      body.size > 0 &&
      !(settings.suspendPoolMembers && suspendsTier(provisioner.capabilities(), body.tier))
    ) {
      // Members made through the control plane wait suspended, and the start that resumes one for its claim tells
      // the control plane it is claimed; a member that could not be suspended would be claimed without its knowing.
      throw new DomainError(
        "conflict",
        `warm pools through the control plane keep their members suspended, and this org's workspace backend cannot suspend a tier ${body.tier} workspace; creates provision cold`,
        { field: "tier" },
      );
    }
    const now = clock.now();
    await db
      .insert(pools)
      .values({
        orgId: settings.orgId,
        runtime: body.runtime,
        tier: body.tier,
        size: body.size,
        updatedAt: now,
      })
      .onConflictDoUpdate({
        target: [pools.orgId, pools.runtime, pools.tier],
        // A PUT is also the operator's "try again now": the backoff after failed starts is reset.
        set: {
          size: body.size,
          updatedAt: now,
          failures: 0,
          nextAttemptAt: null,
          lastError: null,
          lastErrorCode: null,
          lastErrorAt: null,
        },
      });
    this.deps.logger.info({ runtime: body.runtime, tier: body.tier, size: body.size }, "pool target set");
    this.onPoolChanged();
    const view = (await this.list()).find((pool) => pool.runtime === body.runtime && pool.tier === body.tier);
    if (!view) throw new DomainError("internal", "the pool just written cannot be read back");
    return view;
  }

  /** Every pool of the org with its members counted: ready, starting, and claimed (workspace not removed). */
  async list(): Promise<PoolView[]> {
    const { db, settings } = this.deps;
    const orgId = settings.orgId;
    const [rows, live, claimed] = await Promise.all([
      db.select().from(pools).where(eq(pools.orgId, orgId)).orderBy(asc(pools.runtime), asc(pools.tier)),
      db
        .select({
          runtime: poolMembers.runtime,
          tier: poolMembers.tier,
          state: poolMembers.state,
          n: count(),
        })
        .from(poolMembers)
        .where(and(eq(poolMembers.orgId, orgId), inArray(poolMembers.state, [...LIVE_MEMBER_STATES])))
        .groupBy(poolMembers.runtime, poolMembers.tier, poolMembers.state),
      db
        .select({ runtime: poolMembers.runtime, tier: poolMembers.tier, n: count() })
        .from(poolMembers)
        .innerJoin(workspaces, eq(workspaces.id, poolMembers.id))
        .where(
          and(
            eq(poolMembers.orgId, orgId),
            eq(poolMembers.state, "claimed"),
            ne(workspaces.status, "removed"),
          ),
        )
        .groupBy(poolMembers.runtime, poolMembers.tier),
    ]);
    const key = (runtime: string, tier: number) => `${runtime}\u0000${tier}`;
    const counts = new Map<string, { ready: number; starting: number; claimed: number }>();
    const of = (runtime: string, tier: number) => {
      const k = key(runtime, tier);
      let entry = counts.get(k);
      if (!entry) {
        entry = { ready: 0, starting: 0, claimed: 0 };
        counts.set(k, entry);
      }
      return entry;
    };
    for (const row of live) {
      const entry = of(row.runtime, row.tier);
      if (row.state === "ready") entry.ready = row.n;
      else entry.starting = row.n;
    }
    for (const row of claimed) of(row.runtime, row.tier).claimed = row.n;
    return rows.map((row) => ({
      runtime: row.runtime,
      tier: row.tier as Tier,
      size: row.size,
      image: row.image,
      ...(counts.get(key(row.runtime, row.tier)) ?? { ready: 0, starting: 0, claimed: 0 }),
      last_error:
        row.lastError === null
          ? null
          : {
              code: row.lastErrorCode ?? "internal",
              message: row.lastError,
              at: (row.lastErrorAt ?? row.updatedAt).toISOString(),
              attempts: Math.max(1, row.failures),
            },
      next_attempt_at: row.nextAttemptAt?.toISOString() ?? null,
      updated_at: row.updatedAt.toISOString(),
    }));
  }

  /**
   * A pool member's agent waits here for its claim, with the pool token it was started with. Each call renews the
   * member's liveness (and makes it `ready` once its backend call has returned), then waits up to `wait_seconds` for a
   * create to claim it. A claimed member's agent gets its workspace's name, metadata and one-time boot token, which
   * it registers with like any workspace (its secrets come in the registration's answer, never here).
   * The same answer is given again until the boot token is spent, so an answer lost on the way is not fatal.
   */
  async awaitClaim(token: string, body: AwaitClaimBody, signal?: AbortSignal): Promise<ClaimAnswer> {
    const member = await this.member(token, body.id);
    if (member.state === "claimed") return this.delivery(member.id, true);
    await this.deps.db
      .update(poolMembers)
      .set({ agentWaitingAt: this.deps.clock.now(), ...becomesReady("handle") })
      .where(and(eq(poolMembers.id, member.id), inArray(poolMembers.state, [...LIVE_MEMBER_STATES])));

    const waitMs = (body.wait_seconds ?? DEFAULT_CLAIM_WAIT_SECONDS) * 1000;
    const deadline = Date.now() + waitMs;
    const claimed = new Wakeup();
    // The subscription ends when the bus closes (shutdown: no claim wait holds up the drain) or missed events (a
    // reconnect): the wait answers "nothing yet" then, and the agent asks again at once.
    let closing = false;
    const subscription = this.deps.events.subscribe(
      { workspaceId: member.id },
      () => claimed.wake(),
      undefined,
      () => {
        closing = true;
        claimed.wake();
      },
    );
    const unwatch = [
      // A claim made by this process wakes the wait as soon as it is committed, not after its event's NOTIFY.
      this.deps.events.watchWorkspaceChanges((id) => {
        if (id === member.id) claimed.wake();
      }),
      this.changes?.on("workspaces", (id) => {
        if (id === member.id) claimed.wake();
      }),
      this.changes?.onReset(() => claimed.wake()),
    ];
    try {
      for (;;) {
        claimed.reset();
        // The claim writes the workspace row under the member's id: once it is there, this is the answer.
        const delivered = await this.delivery(member.id, false);
        if (delivered) return delivered;
        await this.member(token, member.id); // still the pool's (404 once it is being removed)
        const left = deadline - Date.now();
        if (left <= 0 || closing || signal?.aborted) return { claimed: false };
        await claimed.within(Math.min(left, CLAIM_POLL_MS), signal);
      }
    } finally {
      subscription.unsubscribe();
      for (const stop of unwatch) stop?.();
    }
  }

  /** The member, when `token` is its pool token; 401 otherwise (unknown id included), 404 once it is being removed. */
  private async member(token: string, id: string): Promise<PoolMemberRow> {
    const [member] = await this.deps.db
      .select()
      .from(poolMembers)
      .where(and(eq(poolMembers.id, id), eq(poolMembers.orgId, this.deps.settings.orgId)));
    if (!member || !sameHash(member.waitTokenHash, hashToken(token))) {
      throw new DomainError("unauthorized", "waiting for a claim needs this pool member's pool token");
    }
    if (member.state === "removing") {
      throw new DomainError("not_found", `pool member ${id} was removed from its pool`);
    }
    return member;
  }

  /**
   * What the claimed member's agent needs to become its workspace: name, metadata, the unspent boot token. Null when
   * the member is not claimed yet (no workspace row under its id) and `claimed` is false.
   */
  private async delivery(workspaceId: string, claimed: true): Promise<ClaimAnswer>;
  private async delivery(workspaceId: string, claimed: false): Promise<ClaimAnswer | null>;
  private async delivery(workspaceId: string, claimed: boolean): Promise<ClaimAnswer | null> {
    const { db, sealer } = this.deps;
    // One round trip: the unspent boot tokens are read beside the operation that holds the plaintext.
    const [[workspace], [provision], unspent] = await Promise.all([
      db
        .select()
        .from(workspaces)
        .where(and(eq(workspaces.id, workspaceId), eq(workspaces.orgId, this.deps.settings.orgId))),
      // The claim's operation (a recorded provision, or the start that resumes a suspended member) holds the token.
      db
        .select()
        .from(operations)
        .where(eq(operations.workspaceId, workspaceId))
        .orderBy(asc(operations.createdAt))
        .limit(1),
      db
        .select({ hash: workspaceTokens.tokenHash })
        .from(workspaceTokens)
        .where(
          and(
            eq(workspaceTokens.workspaceId, workspaceId),
            eq(workspaceTokens.kind, "boot"),
            isNull(workspaceTokens.spentAt),
          ),
        ),
    ]);
    if (!workspace && !claimed) return null;
    if (!workspace || workspace.status === "removing" || workspace.status === "removed") {
      throw new DomainError("not_found", `workspace ${workspaceId} was removed`);
    }
    const bootToken = provision ? openOperationInput(sealer, provision) : null;
    const bootHash = bootToken ? hashToken(bootToken) : null;
    if (!bootToken || !unspent.some((token) => token.hash === bootHash)) {
      throw new DomainError(
        "conflict",
        `workspace ${workspaceId} was claimed and its agent has registered already; it registers again only with its stored credentials`,
      );
    }
    return {
      claimed: true,
      workspace_id: workspaceId,
      boot_token: bootToken,
      name: workspace.name,
      metadata: workspace.metadata as Extract<ClaimAnswer, { claimed: true }>["metadata"],
    };
  }
}

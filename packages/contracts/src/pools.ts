/**
 * Warm pools: per (runtime, tier), workspaces started ahead of need whose agents wait, unassigned, for a create to
 * claim them (`PUT /pools`, `GET /pools`, and the agent's side, `POST /registry/claim`).
 */
import { z } from "zod";
import { WorkspaceId } from "./ids.ts";
import { singleLineText } from "./text.ts";
import { Metadata, Tier } from "./workspaces.ts";

/** The largest target size of one pool: each member is a running workspace. */
export const MAX_POOL_SIZE = 50;

export const PoolRuntime = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, "runtime must be a lower-case image name fragment");

/** `PUT /pools`: the pool of `runtime` and `tier` is kept at `size` ready members; 0 drains it. */
export const PutPoolBody = z.strictObject({
  runtime: PoolRuntime,
  tier: Tier,
  size: z
    .number()
    .int("size must be a whole number")
    .min(0, "size must be 0 or more")
    .max(MAX_POOL_SIZE, `size must be at most ${MAX_POOL_SIZE}`),
});
export type PutPoolBody = z.infer<typeof PutPoolBody>;

/** Why the last attempt to start a member of a pool failed: the backend's code, its message (scrubbed), when. */
export const PoolFailure = z.object({
  code: z.string(),
  message: z.string(),
  at: z.string(),
  /** Attempts in a row that failed so far: the wait before the next one doubles with each (up to a cap). */
  attempts: z.number().int().positive(),
});
export type PoolFailure = z.infer<typeof PoolFailure>;

export const PoolView = z.object({
  runtime: z.string(),
  tier: Tier,
  /** The target: how many members the pool keeps ready. */
  size: z.number().int().nonnegative(),
  /**
   * The image the pool fills with: the one the newest running replica starts workspaces on (null until a filler
   * first ran). Members on another image are replaced.
   */
  image: z.string().nullable(),
  /** Members whose agent is up and waiting for a claim. */
  ready: z.number().int().nonnegative(),
  /** Members being started (or whose agent has not asked for its claim yet). */
  starting: z.number().int().nonnegative(),
  /** Members claimed by a create whose workspace is not removed (they are ordinary workspaces now). */
  claimed: z.number().int().nonnegative(),
  /** Why the last attempt to start a member failed, until one succeeds (or the pool is PUT again). */
  last_error: PoolFailure.nullable(),
  /** After a failure, when the filler tries the pool again (no member is started before); null when not waiting. */
  next_attempt_at: z.string().nullable(),
  updated_at: z.string(),
});
export type PoolView = z.infer<typeof PoolView>;

export const PoolList = z.object({ pools: z.array(PoolView) });
export type PoolList = z.infer<typeof PoolList>;

/** `POST /registry/claim`, with the member's pool token: waits up to `wait_seconds` for a create to claim it. */
export const AwaitClaimBody = z.strictObject({
  id: WorkspaceId,
  wait_seconds: z.number().int().min(0).max(60).optional(),
});
export type AwaitClaimBody = z.infer<typeof AwaitClaimBody>;

/**
 * What the waiting agent gets: nothing yet (ask again), or its identity. The boot token is registered with as any
 * workspace's is (`POST /registry/register`), whose answer carries its secrets.
 */
export const ClaimAnswer = z.discriminatedUnion("claimed", [
  z.object({ claimed: z.literal(false) }),
  z.object({
    claimed: z.literal(true),
    workspace_id: WorkspaceId,
    boot_token: z.string(),
    name: singleLineText(),
    metadata: Metadata,
  }),
]);
export type ClaimAnswer = z.infer<typeof ClaimAnswer>;

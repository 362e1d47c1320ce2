import { DomainError, type WorkspaceStatus } from "@molecule/contracts";
import { operations } from "@molecule/db";
import type { ChangeFeed } from "@molecule/service-kit/cluster";
import { desc, eq } from "drizzle-orm";
import { type A2ARoute, databaseDirectory } from "./a2a-directory.ts";
import type { PlatformDeps } from "./deps.ts";
import type { WorkspaceService } from "./workspaces.ts";

/** How long an A2A request waits for a woken workspace unless A2A_WAKE_TIMEOUT_SECONDS says otherwise. */
export const DEFAULT_A2A_WAKE_TIMEOUT_MS = 60_000;
/** The `Retry-After` of a `wake_timeout`: the wake goes on, and the agent is usually back soon. */
export const WAKE_RETRY_AFTER_SECONDS = 5;

const RECEIVING: ReadonlySet<WorkspaceStatus> = new Set(["online", "degraded"]);
/**
 * Thrown to a request whose caller went away (its connection closed) while it waited for a wake: there is nobody to
 * answer. The start it queued goes on.
 */
export class CallerGone extends Error {
  constructor(workspaceId: string) {
    super(`the caller went away while workspace ${workspaceId} was waking`);
    this.name = "CallerGone";
  }
}

/** Statuses a wake passes through (a suspend finishing first, then the start): a request waits through them. */
const WAKING: ReadonlySet<WorkspaceStatus> = new Set([
  "suspended",
  "stopping",
  "provisioning",
  "awaiting_agent",
]);

/**
 * Wakes suspended workspaces for the A2A proxy and holds the request until the agent is back.
 *
 * - One resume for any number of requests, on any number of replicas: the `start` operation is queued by
 *   `WorkspaceService.requestLifecycle`, which moves the row from `suspended` under its row lock, so only the first
 *   request anywhere queues it (the others find it `provisioning` and wait). Requests in this process share the one
 *   call in flight.
 * - The wait is woken by the workspace's status changes, not by polling: this process's own (its event bus) and
 *   every replica's (the database's change feed); each re-reads the row. Without a connected feed (changes could go
 *   unheard) it also re-reads every second.
 * - Past the wake timeout the caller gets `wake_timeout` (503 with Retry-After); the wake itself goes on.
 * - A caller that goes away (`signal`: its connection closed) stops waiting at once (`CallerGone`), freeing what its
 *   request holds; the start is queued apart from any request, so it completes and other waiters are not touched.
 */
export class WorkspaceWaker {
  private readonly starting = new Map<string, Promise<void>>();
  private readonly database: ReturnType<typeof databaseDirectory>;

  constructor(
    private readonly deps: PlatformDeps,
    private readonly workspaces: WorkspaceService,
    private readonly changes: ChangeFeed | null,
  ) {
    this.database = databaseDirectory(deps);
  }

  /**
   * Whether a request to a target in this status should wait for it: always when it is suspended; while it is
   * starting or stopping, when that is a wake or a suspend under way (its latest operation is a start or a suspend),
   * not a fresh provision or a stop someone asked for.
   */
  async shouldWait(route: A2ARoute): Promise<boolean> {
    if (route.status === "suspended") return true;
    if (!WAKING.has(route.status)) return false;
    const [latest] = await this.deps.db
      .select({ kind: operations.kind })
      .from(operations)
      .where(eq(operations.workspaceId, route.id))
      .orderBy(desc(operations.createdAt))
      .limit(1);
    return latest?.kind === "start" || latest?.kind === "suspend";
  }

  /** The target's route once it receives messages again, waking it if it is suspended; `signal`: the caller left. */
  async untilReceiving(workspaceId: string, signal?: AbortSignal): Promise<A2ARoute> {
    const { settings } = this.deps;
    const timeoutMs = settings.a2aWakeTimeoutMs ?? DEFAULT_A2A_WAKE_TIMEOUT_MS;
    const started = performance.now();
    const deadline = started + timeoutMs;
    // One event per request that waited: how long, and how it ended (the metrics count them).
    const waited = (outcome: "woken" | "timeout" | "failed" | "caller_gone") =>
      this.deps.events.publish({
        type: "a2a.wake_wait",
        workspaceId,
        data: { outcome, waitedMs: Math.round(performance.now() - started) },
      });
    let changed = false;
    let wakeUp: (() => void) | null = null;
    const onChange = (id?: string) => {
      if (id !== undefined && id !== workspaceId) return;
      changed = true;
      wakeUp?.();
    };
    const stops = [
      this.deps.events.watchWorkspaceChanges(onChange),
      this.changes?.on("workspaces", onChange),
      this.changes?.onReset(() => onChange()),
      listenAbort(signal, () => onChange()),
    ];
    const callerGone = () => {
      waited("caller_gone");
      return new CallerGone(workspaceId);
    };
    try {
      for (;;) {
        if (signal?.aborted) throw callerGone();
        // A change heard while the row is read is not lost: the wait below ends at once.
        changed = false;
        const route = await this.database.route(workspaceId);
        if (!route) {
          waited("failed");
          throw new DomainError("not_found", `workspace ${workspaceId} not found`);
        }
        if (RECEIVING.has(route.status) && route.url) {
          waited("woken");
          return route;
        }
        if (!WAKING.has(route.status) && !RECEIVING.has(route.status)) {
          waited("failed");
          throw notReceiving(route);
        }
        if (route.status === "suspended") await this.startOnce(workspaceId);
        if (signal?.aborted) throw callerGone();
        const left = deadline - performance.now();
        if (left <= 0) {
          waited("timeout");
          throw new DomainError(
            "wake_timeout",
            `workspace ${workspaceId} is waking (it is ${route.status}) and its agent was not back within ${timeoutMs / 1000} s; retry shortly`,
            { status: route.status, retryAfterSeconds: WAKE_RETRY_AFTER_SECONDS },
          );
        }
        if (changed) continue;
        const waitMs = this.changes?.connected ? left : Math.min(left, 1_000);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, waitMs);
          function done() {
            clearTimeout(timer);
            wakeUp = null;
            resolve();
          }
          wakeUp = done;
        });
      }
    } finally {
      for (const stop of stops) stop?.();
    }
  }

  /** Queues the workspace's start unless this process is already queuing it; another replica's is found queued. */
  private startOnce(workspaceId: string): Promise<void> {
    let queuing = this.starting.get(workspaceId);
    if (!queuing) {
      queuing = this.workspaces
        .requestLifecycle(workspaceId, "start", undefined, { reason: "woken by an A2A request" })
        .then(
          (accepted) => {
            this.deps.logger.info(
              { workspaceId, operationId: accepted.operation.id },
              "waking suspended workspace for an A2A request",
            );
          },
          (error: unknown) => {
            // Moved on since it was read: another request (here or on another replica) started it first.
            if (error instanceof DomainError && error.code === "invalid_transition") return;
            throw error;
          },
        )
        .finally(() => this.starting.delete(workspaceId));
      this.starting.set(workspaceId, queuing);
    }
    return queuing;
  }
}

/** Calls `listener` once when `signal` aborts; the returned function stops listening. */
function listenAbort(signal: AbortSignal | undefined, listener: () => void): (() => void) | undefined {
  if (!signal) return undefined;
  signal.addEventListener("abort", listener, { once: true });
  return () => signal.removeEventListener("abort", listener);
}

function notReceiving(route: A2ARoute): DomainError {
  return new DomainError(
    "upstream_unavailable",
    `workspace ${route.id} is ${route.status}; it receives messages only when online or degraded`,
    { status: route.status, retryAfterSeconds: 30 },
  );
}

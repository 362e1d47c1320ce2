import { WorkspaceId } from "@molecule/contracts";
import { loggableError } from "@molecule/service-kit/log";
import { type Context, Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { requireAdmin, requireWorkspaceOrAdmin } from "../http/auth.ts";
import { parseWith } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import type { PlatformDeps } from "../services/deps.ts";
import type { EventBus, EventFilter, PlatformEvent } from "../services/events.ts";
import { workspaceForToken } from "../services/tokens.ts";
import type { WorkspaceService } from "../services/workspaces.ts";

const KEEPALIVE_MS = 15_000;

/** `Last-Event-ID`: absent → live only; a number → resume after it; anything else → a reset. */
function lastEventId(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const trimmed = header.trim();
  return /^\d{1,15}$/.test(trimmed) ? Number(trimmed) : -1;
}

/**
 * A stream opened with a workspace's token lives only as long as that token: `changed` fires when this process
 * rotates or revokes the workspace's tokens, and `current` says whether the token still belongs to the workspace.
 */
interface TokenBound {
  watch(changed: () => void): () => void;
  current(): Promise<boolean>;
}

const REVOKED = {
  reason: "the token this stream was opened with was rotated or revoked; reconnect with the current token",
};

function streamEvents(
  c: Context<AppEnv>,
  bus: EventBus,
  filter: EventFilter,
  keepaliveMs: number,
  token?: TokenBound,
) {
  const fromId = lastEventId(c.req.header("last-event-id"));
  return streamSSE(c, async (stream) => {
    const queue: PlatformEvent[] = [];
    let closed = false;
    let overflowed = false;
    // Checked once before the first event: the token may have been rotated since this request was authenticated.
    let recheck = token !== undefined;
    // Events published before the change was signalled (a workspace's `removed` status) are delivered first.
    let deliverBeforeCheck = 0;
    let wake: (() => void) | null = null;
    const notify = () => {
      const resolve = wake;
      wake = null;
      resolve?.();
    };
    const subscription = bus.subscribe(
      filter,
      (event) => {
        if (queue.length >= bus.capacity) overflowed = true;
        else queue.push(event);
        notify();
      },
      fromId,
      () => {
        closed = true;
        notify();
      },
    );
    queue.unshift(...subscription.replay);
    const unwatch = token?.watch(() => {
      if (!recheck) deliverBeforeCheck = queue.length;
      recheck = true;
      notify();
    });
    stream.onAbort(() => {
      closed = true;
      notify();
    });
    /**
     * False once the stream's token is no longer current: a final `revoked` event is written and the stream ends.
     * When the check itself fails (the database is away) the stream ends too, without a verdict: the client
     * reconnects and is authenticated again.
     */
    const stillCurrent = async () => {
      recheck = false;
      if (!token) return true;
      let current: boolean;
      try {
        current = await token.current();
      } catch (error) {
        c.get("logger")?.warn(
          { err: loggableError(error) },
          "event stream closed: its token could not be checked",
        );
        return false;
      }
      if (!current) await stream.writeSSE({ event: "revoked", data: JSON.stringify(REVOKED) });
      return current;
    };
    const reset = async (reason: string, id: number) =>
      stream.writeSSE({ event: "reset", id: String(id), data: JSON.stringify({ reason, lastEventId: id }) });
    try {
      await stream.write(": connected\n\n");
      if (subscription.reset) {
        await reset("Last-Event-ID is outside the replay window; refetch state", subscription.lastId);
      }
      while (!closed && !stream.aborted) {
        if (recheck && deliverBeforeCheck === 0 && !(await stillCurrent())) return;
        if (overflowed) {
          // This client fell too far behind to be caught up from memory: it reconnects and refetches state.
          await reset("the client fell behind the event buffer; refetch state", bus.latestId);
          return;
        }
        const event = queue.shift();
        if (event) {
          if (deliverBeforeCheck > 0) deliverBeforeCheck--;
          await stream.writeSSE({ id: String(event.id), event: event.type, data: JSON.stringify(event) });
          continue;
        }
        const timedOut = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(true), keepaliveMs);
          wake = () => {
            clearTimeout(timer);
            resolve(false);
          };
        });
        if (timedOut && !closed && !stream.aborted) {
          // Another replica may have rotated the token: it is checked again at every keepalive.
          if (!(await stillCurrent())) return;
          await stream.write(": keepalive\n\n");
        }
      }
    } finally {
      subscription.unsubscribe();
      unwatch?.();
    }
  });
}

/**
 * Server-sent events: every event for the admin, one workspace's for the admin or that workspace's token. A stream
 * opened with a workspace's token ends (`event: revoked`) as soon as that token is rotated or revoked.
 */
export function eventRoutes(
  deps: Pick<PlatformDeps, "db" | "events">,
  workspaces: WorkspaceService,
  keepaliveMs = KEEPALIVE_MS,
) {
  const bus = deps.events;
  const app = new Hono<AppEnv>();

  app.get("/events", requireAdmin(), (c) => streamEvents(c, bus, {}, keepaliveMs));

  app.get("/workspaces/:id/events", requireWorkspaceOrAdmin(), async (c) => {
    const id = parseWith(WorkspaceId, c.req.param("id"), "workspace id in the path");
    await workspaces.getRow(id);
    const caller = c.get("caller");
    const token: TokenBound | undefined =
      caller?.kind === "workspace"
        ? {
            watch: (changed) => bus.watchCredentials(id, changed),
            current: async () => (await workspaceForToken(deps.db, caller.tokenHash)) === id,
          }
        : undefined;
    return streamEvents(c, bus, { workspaceId: id }, keepaliveMs, token);
  });

  return app;
}

import { DomainError, isId } from "@molecule/contracts";
import { type Context, Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { requireAdmin, requireWorkspaceOrAdmin } from "../http/auth.ts";
import type { AppEnv } from "../http/types.ts";
import type { EventBus, EventFilter, PlatformEvent } from "../services/events.ts";
import type { WorkspaceService } from "../services/workspaces.ts";

const KEEPALIVE_MS = 15_000;

/** `Last-Event-ID`: absent → live only; a number → resume after it; anything else → a reset. */
function lastEventId(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const trimmed = header.trim();
  return /^\d{1,15}$/.test(trimmed) ? Number(trimmed) : -1;
}

function streamEvents(c: Context<AppEnv>, bus: EventBus, filter: EventFilter, keepaliveMs: number) {
  const fromId = lastEventId(c.req.header("last-event-id"));
  return streamSSE(c, async (stream) => {
    const queue: PlatformEvent[] = [];
    let closed = false;
    let overflowed = false;
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
    stream.onAbort(() => {
      closed = true;
      notify();
    });
    const reset = async (reason: string, id: number) =>
      stream.writeSSE({ event: "reset", id: String(id), data: JSON.stringify({ reason, lastEventId: id }) });
    try {
      await stream.write(": connected\n\n");
      if (subscription.reset) {
        await reset("Last-Event-ID is outside the replay window; refetch state", subscription.lastId);
      }
      while (!closed && !stream.aborted) {
        if (overflowed) {
          // This client fell too far behind to be caught up from memory: it reconnects and refetches state.
          await reset("the client fell behind the event buffer; refetch state", bus.latestId);
          return;
        }
        const event = queue.shift();
        if (event) {
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
        if (timedOut && !closed && !stream.aborted) await stream.write(": keepalive\n\n");
      }
    } finally {
      subscription.unsubscribe();
    }
  });
}

/** Server-sent events: every event for the admin, one workspace's for the admin or that workspace's token. */
export function eventRoutes(bus: EventBus, workspaces: WorkspaceService, keepaliveMs = KEEPALIVE_MS) {
  const app = new Hono<AppEnv>();

  app.get("/events", requireAdmin(), (c) => streamEvents(c, bus, {}, keepaliveMs));

  app.get("/workspaces/:id/events", requireWorkspaceOrAdmin(), async (c) => {
    const id = c.req.param("id");
    if (!isId("ws", id)) throw new DomainError("bad_request", `"${id.slice(0, 64)}" is not a workspace id`);
    await workspaces.getRow(id);
    return streamEvents(c, bus, { workspaceId: id }, keepaliveMs);
  });

  return app;
}

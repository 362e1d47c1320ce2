/**
 * Serves an EventBus as server-sent events: `Last-Event-ID` resumes from the bus's replay buffer (a reset event when
 * it cannot), keepalive comments, a reset when a slow client overflows its queue, and, for a stream opened with a
 * credential that can be revoked, a final `revoked` event once it is.
 */
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { Logger } from "pino";
import type { BusEvent, EventBus, EventFilter } from "../events.ts";
import { loggableError } from "../log.ts";

export const KEEPALIVE_MS = 15_000;

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
export interface TokenBound {
  watch(changed: () => void): () => void;
  current(): Promise<boolean>;
}

const REVOKED = {
  reason: "the token this stream was opened with was rotated or revoked; reconnect with the current token",
};

export function streamEvents<Type extends string>(
  c: Context,
  bus: EventBus<Type>,
  filter: EventFilter,
  keepaliveMs: number = KEEPALIVE_MS,
  token?: TokenBound,
) {
  const fromId = lastEventId(c.req.header("last-event-id"));
  return streamSSE(c, async (stream) => {
    const queue: BusEvent<Type>[] = [];
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
        (c.get("logger") as Logger | undefined)?.warn(
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
    } catch (error) {
      // Left to Hono, it would reach the console unformatted; it goes to the request's log, and the stream ends
      // (the client reconnects with Last-Event-ID).
      (c.get("logger") as Logger | undefined)?.error(
        { err: loggableError(error) },
        "event stream ended by an error",
      );
    } finally {
      subscription.unsubscribe();
      unwatch?.();
    }
  });
}

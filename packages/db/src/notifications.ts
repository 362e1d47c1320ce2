/**
 * PostgreSQL LISTEN/NOTIFY for both drivers. Notifications reach every process listening on the channel at commit,
 * this one included; a process that was not connected when one was sent never gets it, so whoever caches what
 * notifications invalidate treats every (re)connect, and the time disconnected, as "anything may have changed".
 */
import type { PGlite } from "@electric-sql/pglite";
import postgres from "postgres";

/** Called with each notification's payload. */
export type NotifyHandler = (payload: string) => void;

/**
 * `listen(channel, onNotify, onConnect?, onDisconnect?)` resolves once listening, with a function that stops.
 * `onConnect` runs each time the channel is listened on (first time and every reconnect): notifications sent while
 * not listening are lost, so it is where state kept from earlier notifications must be treated as stale.
 * `onDisconnect` runs when the listening connection is lost (only PostgreSQL loses it); until the next `onConnect`
 * notifications are being missed.
 */
export type Listen = (
  channel: string,
  onNotify: NotifyHandler,
  onConnect?: () => void,
  onDisconnect?: () => void,
) => Promise<() => Promise<void>>;

export type Notify = (channel: string, payload: string) => Promise<void>;

/** NOTIFY's payload limit in bytes (PostgreSQL's default build); a longer one is refused by the server. */
export const MAX_NOTIFY_PAYLOAD_BYTES = 7999;

const CHANNEL_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

function checkChannel(channel: string): void {
  if (!CHANNEL_NAME.test(channel)) throw new Error(`bad notification channel name: ${channel}`);
}

interface Subscriber {
  onNotify: NotifyHandler;
  onConnect?: () => void;
  onDisconnect?: () => void;
  /** The connection generation this subscriber was last told it is connected in (-1: never). */
  connectedIn: number;
}

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5000;

function safely(fn: (() => void) | undefined): void {
  try {
    fn?.();
  } catch {
    // a subscriber's failure is its own; the connection and the other subscribers carry on
  }
}

/**
 * One dedicated PostgreSQL connection (outside the query pool) carrying every LISTEN of this process. It is not
 * postgres.js's `sql.listen`, which re-listens after a drop but says nothing about the drop itself: a cache fed by
 * notifications must know it is blind from the moment the connection is lost, not only once it is back. After a drop
 * the channels are listened on again with backoff until the connection returns (or `close`).
 */
export class PostgresListener {
  private readonly channels = new Map<string, Set<Subscriber>>();
  /** Channels LISTENed on the current connection. */
  private readonly listening = new Set<string>();
  private generation = 0;
  private closed = false;
  private syncing: Promise<void> | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryMs = RETRY_MIN_MS;
  private readonly sql: postgres.Sql;

  constructor(url: string) {
    // postgres.js delivers NOTIFY messages to `onnotify` (what its own `sql.listen` is built on); its types omit it.
    const options: postgres.Options<Record<string, never>> & {
      onnotify: (channel: string, payload: string) => void;
    } = {
      max: 1,
      idle_timeout: 0,
      max_lifetime: null,
      fetch_types: false,
      onnotice: () => {},
      connection: { application_name: "molecule-listen" },
      onnotify: (channel, payload) => {
        for (const subscriber of [...(this.channels.get(channel) ?? [])]) {
          try {
            subscriber.onNotify(payload);
          } catch {
            // as in safely(): one broken handler never stops the others
          }
        }
      },
      onclose: () => this.lost(),
    };
    this.sql = postgres(url, options);
  }

  readonly listen: Listen = async (channel, onNotify, onConnect, onDisconnect) => {
    checkChannel(channel);
    if (this.closed) throw new Error("the listener is closed");
    const subscriber: Subscriber = { onNotify, onConnect, onDisconnect, connectedIn: -1 };
    let subscribers = this.channels.get(channel);
    if (!subscribers) {
      subscribers = new Set();
      this.channels.set(channel, subscribers);
    }
    subscribers.add(subscriber);
    try {
      await this.sync();
    } catch (error) {
      this.forget(channel, subscriber);
      throw error;
    }
    if (subscriber.connectedIn !== this.generation) {
      this.forget(channel, subscriber);
      throw new Error(`could not listen on ${channel}: the connection was lost`);
    }
    return async () => {
      if (!this.forget(channel, subscriber) || !this.listening.has(channel) || this.closed) return;
      this.listening.delete(channel);
      await this.sql.unsafe(`UNLISTEN ${channel}`).catch(() => {});
    };
  };

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.sql.end({ timeout: 5 });
  }

  /** Removes the subscriber; true when its channel has no subscriber left. */
  private forget(channel: string, subscriber: Subscriber): boolean {
    const subscribers = this.channels.get(channel);
    if (!subscribers?.delete(subscriber)) return false;
    if (subscribers.size > 0) return false;
    this.channels.delete(channel);
    return true;
  }

  private lost(): void {
    if (this.closed) return;
    this.generation += 1;
    this.listening.clear();
    for (const subscribers of this.channels.values()) {
      for (const subscriber of subscribers) {
        if (subscriber.connectedIn === this.generation - 1) safely(subscriber.onDisconnect);
      }
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.closed || this.retryTimer || this.channels.size === 0) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.sync().then(
        () => {
          this.retryMs = RETRY_MIN_MS;
        },
        () => {
          this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
          this.scheduleRetry();
        },
      );
    }, this.retryMs);
    this.retryTimer.unref();
  }

  /** LISTENs every channel not yet listened on this connection, then tells its new subscribers; one at a time. */
  private sync(): Promise<void> {
    const run = async (): Promise<void> => {
      await (this.syncing ?? Promise.resolve()).catch(() => {});
      for (;;) {
        const generation = this.generation;
        const pending = [...this.channels.keys()].filter((channel) => !this.listening.has(channel));
        for (const channel of pending) {
          await this.sql.unsafe(`LISTEN ${channel}`);
          if (generation !== this.generation) break; // lost meanwhile: start over on the new connection
          this.listening.add(channel);
        }
        if (generation !== this.generation) {
          if (this.closed) return;
          continue;
        }
        for (const [channel, subscribers] of this.channels) {
          if (!this.listening.has(channel)) continue;
          for (const subscriber of subscribers) {
            if (subscriber.connectedIn === generation) continue;
            subscriber.connectedIn = generation;
            safely(subscriber.onConnect);
          }
        }
        return;
      }
    };
    const next = run();
    this.syncing = next;
    return next;
  }
}

/** The embedded database: one process, one connection that never drops, so `onConnect` runs once. */
export function pgliteListen(client: PGlite): Listen {
  return async (channel, onNotify, onConnect) => {
    checkChannel(channel);
    const unlisten = await client.listen(channel, (payload) => {
      try {
        onNotify(payload);
      } catch {
        // one broken handler never stops the others
      }
    });
    safely(onConnect);
    return async () => {
      await unlisten();
    };
  };
}

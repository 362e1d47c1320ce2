/**
 * A service's event stream: a bounded ring buffer of recent events and live subscribers. Events carry metadata only
 * (ids, statuses, names, durations), never request bodies, tokens or secret values. Each service names its event
 * types; `streamEvents` (service-kit/http) serves a bus as server-sent events.
 *
 * In one process (tests, `new EventBus()` alone) ids are this process's counter and `publish` delivers at once.
 * `share()` makes the bus one of N replicas': from then on `publish` sends the event through PostgreSQL NOTIFY
 * (batched, off the caller's path: a failed NOTIFY is logged, never thrown) and every replica's bus, this one
 * included, buffers what arrives on the channel. Ids then come from a database sequence (unique on every replica)
 * and events sit in the buffer in the order PostgreSQL delivered them, which is the same on every listener (one
 * global notification queue in commit order). So `Last-Event-ID` is resumed by position: the events after that id in
 * the buffer, on whichever replica the client reconnects to; an id the buffer does not hold gets a reset. Ids are
 * unique but not increasing in delivery order (two replicas may commit out of id order): compare them for equality
 * only.
 */
import { sql } from "drizzle-orm";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import type { Logger } from "pino";
import type { NotificationSource } from "./cluster.ts";

export interface BusEvent<Type extends string = string> {
  id: number;
  type: Type;
  /** The workspace the event is about, if one; what a workspace filter matches. */
  workspaceId: string | null;
  at: string;
  data: Record<string, unknown>;
}

export interface PublishInput<Type extends string = string> {
  type: Type;
  workspaceId: string | null;
  data: Record<string, unknown>;
}

export interface EventFilter {
  /** Only this workspace's events; unset means every event. */
  workspaceId?: string;
}

export interface Subscription<Type extends string = string> {
  /** Buffered events after `fromId` that match the filter, oldest first (empty when `reset`). */
  replay: BusEvent<Type>[];
  /** `fromId` is not in the buffer (too old, or from before a gap): events were lost, refetch state. */
  reset: boolean;
  /** The newest event id when the subscription began (0 before the first): where a client that resets resumes. */
  lastId: number;
  unsubscribe(): void;
}

type Listener<Type extends string> = (event: BusEvent<Type>) => void;

interface Subscriber<Type extends string> {
  filter: EventFilter;
  listener: Listener<Type>;
  onClose: () => void;
}

export const DEFAULT_EVENT_BUFFER = 1000;

/** How a bus reaches the other replicas: the service's database, a channel and a sequence of its own. */
export interface EventSharing {
  // biome-ignore lint/suspicious/noExplicitAny: any schema; only raw SQL is run
  db: PgDatabase<PgQueryResultHKT, any>;
  listen: NotificationSource["listen"];
  /** The NOTIFY channel, one per service (both may share a database). */
  channel: string;
  /** The sequence event ids are drawn from (a migration creates it). */
  sequence: string;
  logger: Pick<Logger, "error">;
}

/** What one NOTIFY may carry, with room to spare under PostgreSQL's 8000 bytes. */
export const MAX_NOTIFY_BYTES = 7900;
/** Per event in a NOTIFY: its id (up to 15 digits), a space and a newline. */
const ID_OVERHEAD_BYTES = 17;
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

type Unsent = Omit<BusEvent, "id">;

/**
 * The event as one line of JSON that fits a NOTIFY: an event whose data is too large keeps its type, workspace and
 * time, and its data becomes `{ truncated: true }` (never dropped: a subscriber still learns something happened).
 */
export function encodeForNotify(event: Unsent): string {
  let line: string | null = null;
  try {
    line = JSON.stringify(event);
  } catch {
    // data JSON cannot carry (a BigInt, a cycle): treated as too large
  }
  if (line !== null && Buffer.byteLength(line) + ID_OVERHEAD_BYTES <= MAX_NOTIFY_BYTES) return line;
  const workspaceId =
    event.workspaceId !== null && Buffer.byteLength(event.workspaceId) > 512 ? null : event.workspaceId;
  return JSON.stringify({ ...event, workspaceId, data: { truncated: true } });
}

export class EventBus<Type extends string = string> {
  private readonly buffer: BusEvent<Type>[] = [];
  /**
   * The id of the last event pushed out of the buffer: resuming from it loses nothing. 0 until the first is, so
   * `Last-Event-ID: 0` replays the whole buffer; null after a gap (nothing before the buffer can be resumed from).
   */
  private evictedId: number | null = 0;
  private nextLocalId = 1;
  private readonly subscribers = new Set<Subscriber<Type>>();
  private readonly publishWatchers = new Set<Listener<Type>>();
  private sharing: EventSharing | null = null;
  private stopListening: (() => Promise<void>) | null = null;
  private unsent: string[] = [];
  private sending: Promise<void> = Promise.resolve();
  private sendScheduled = false;
  private closed = false;

  constructor(
    readonly capacity = DEFAULT_EVENT_BUFFER,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /**
   * From now on events travel through PostgreSQL: published with NOTIFY, received from every replica. Resolves once
   * listening. After a reconnect of the LISTEN connection the buffer starts empty and every open stream is ended
   * (events were missed: its client reconnects, gets a reset and refetches state).
   */
  async share(sharing: EventSharing): Promise<void> {
    if (!IDENTIFIER.test(sharing.sequence)) throw new Error(`bad sequence name: ${sharing.sequence}`);
    this.sharing = sharing;
    let connectedBefore = false;
    this.stopListening = await sharing.listen(
      sharing.channel,
      (payload) => this.receive(payload),
      () => {
        if (connectedBefore) this.gap();
        connectedBefore = true;
      },
    );
  }

  /** Publishes one event. Never throws and never waits: shared events are sent in the background. */
  publish(input: PublishInput<Type>): void {
    this.publishMany([input]);
  }

  /** Publishes several events at once (a heartbeat flush): on PostgreSQL as few NOTIFYs as fit them. */
  publishMany(inputs: readonly PublishInput<Type>[]): void {
    if (this.closed || inputs.length === 0) return;
    const at = this.now().toISOString();
    for (const input of inputs) {
      // Shared, an event has no id until PostgreSQL draws it: the watchers of publishing see id 0.
      const event = {
        id: this.sharing ? 0 : this.nextLocalId++,
        type: input.type,
        workspaceId: input.workspaceId,
        at,
        data: input.data,
      };
      for (const watcher of this.publishWatchers) {
        try {
          watcher(event);
        } catch {
          // As for subscribers: a broken watcher never breaks the publisher.
        }
      }
      if (this.sharing) {
        this.unsent.push(
          encodeForNotify({ type: input.type, workspaceId: input.workspaceId, at, data: input.data }),
        );
      } else {
        this.accept(event);
      }
    }
    if (!this.sharing) return;
    if (this.sendScheduled) return;
    this.sendScheduled = true;
    // Everything published in this turn of the event loop goes in the same NOTIFYs, after those before it.
    setImmediate(() => {
      this.sendScheduled = false;
      const batch = this.unsent;
      this.unsent = [];
      this.sending = this.sending.then(() => this.send(batch));
    });
  }

  /** Resolves once every event published so far has been handed to PostgreSQL (or its sending failed). */
  async drain(): Promise<void> {
    while (this.sendScheduled || this.unsent.length > 0)
      await new Promise((resolve) => setImmediate(resolve));
    await this.sending;
  }

  /**
   * Replay after `fromId` plus live events from now on, with nothing lost or repeated in between: the replay is
   * taken and the listener added in one synchronous step. `onClose` runs when the bus closes (shutdown) or loses
   * events (a reconnect of its LISTEN connection).
   */
  subscribe(
    filter: EventFilter,
    listener: Listener<Type>,
    fromId?: number,
    onClose: () => void = () => {},
  ): Subscription<Type> {
    const lastId = this.latestId;
    let replay: BusEvent<Type>[] = [];
    let reset = false;
    if (fromId !== undefined && fromId !== lastId) {
      const after = fromId === this.evictedId ? 0 : this.indexOf(fromId) + 1;
      if (after === 0 && fromId !== this.evictedId) reset = true;
      else replay = this.buffer.slice(after).filter((event) => matches(filter, event));
    }
    const subscriber: Subscriber<Type> = { filter, listener, onClose };
    this.subscribers.add(subscriber);
    return { replay, reset, lastId, unsubscribe: () => this.subscribers.delete(subscriber) };
  }

  /**
   * Calls `listener` with each event this process publishes, as it publishes it: what per-process counters (metrics)
   * count, which must not count another replica's events when the bus carries them too. Not a subscription: neither
   * counted nor closed with the streams. On a shared bus the event's id is 0 (drawn later, by PostgreSQL).
   */
  watchPublished(listener: Listener<Type>): () => void {
    this.publishWatchers.add(listener);
    return () => this.publishWatchers.delete(listener);
  }

  /** Ends every subscription (their streams close), so a shutting-down server is not held open. */
  close(): void {
    this.closed = true;
    const stop = this.stopListening;
    this.stopListening = null;
    void stop?.().catch(() => {});
    this.endSubscriptions();
  }

  /** The newest event id so far (0 before the first). */
  get latestId(): number {
    return this.buffer.at(-1)?.id ?? this.evictedId ?? 0;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  private indexOf(id: number): number {
    for (let i = this.buffer.length - 1; i >= 0; i--) if (this.buffer[i]?.id === id) return i;
    return -1;
  }

  private async send(lines: string[]): Promise<void> {
    const sharing = this.sharing;
    if (!sharing) return;
    for (let start = 0; start < lines.length; ) {
      let end = start;
      let bytes = 0;
      while (end < lines.length) {
        const size = Buffer.byteLength(lines[end] ?? "") + ID_OVERHEAD_BYTES;
        if (end > start && bytes + size > MAX_NOTIFY_BYTES) break;
        bytes += size;
        end++;
      }
      const chunk = lines.slice(start, end);
      start = end;
      try {
        // One statement: an id from the sequence for each event, all of them in one notification.
        await sharing.db.execute(sql`
          SELECT pg_notify(${sharing.channel}, string_agg(nextval(${sharing.sequence}::regclass)::text || ' ' || e.line, E'\n' ORDER BY e.n))
          FROM json_array_elements_text(${JSON.stringify(chunk)}::json) WITH ORDINALITY AS e(line, n)`);
      } catch (error) {
        sharing.logger.error(
          { err: error instanceof Error ? { message: error.message } : String(error), events: chunk.length },
          "publishing events failed; they are lost",
        );
      }
    }
  }

  private receive(payload: string): void {
    if (this.closed) return;
    for (const line of payload.split("\n")) {
      const space = line.indexOf(" ");
      const id = Number(line.slice(0, space));
      if (space <= 0 || !Number.isSafeInteger(id)) continue;
      let event: Unsent;
      try {
        event = JSON.parse(line.slice(space + 1)) as Unsent;
      } catch {
        continue;
      }
      this.accept({
        id,
        type: event.type as Type,
        workspaceId: event.workspaceId ?? null,
        at: event.at,
        data: event.data ?? {},
      });
    }
  }

  private accept(event: BusEvent<Type>): void {
    this.buffer.push(event);
    if (this.buffer.length > this.capacity) this.evictedId = this.buffer.shift()?.id ?? null;
    for (const subscriber of this.subscribers) {
      if (!matches(subscriber.filter, event)) continue;
      try {
        subscriber.listener(event);
      } catch {
        // A broken subscriber never breaks the publisher (an operation or a request).
      }
    }
  }

  /** Events were missed: nothing buffered can be resumed from, and live streams must reconnect. */
  private gap(): void {
    this.buffer.length = 0;
    this.evictedId = null;
    this.endSubscriptions();
  }

  private endSubscriptions(): void {
    const subscribers = [...this.subscribers];
    this.subscribers.clear();
    for (const subscriber of subscribers) subscriber.onClose();
  }
}

function matches(filter: EventFilter, event: BusEvent): boolean {
  return filter.workspaceId === undefined || event.workspaceId === filter.workspaceId;
}

/**
 * A service's event stream, in process: a bounded ring buffer of recent events with per-process, monotonically
 * increasing ids, and live subscribers. Events carry metadata only (ids, statuses, names, durations), never request
 * bodies, tokens or secret values. Ids restart at 1 when the process restarts. Each service names its event types;
 * `streamEvents` (service-kit/http) serves a bus as server-sent events.
 */

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
  /** `fromId` is older than the buffer (or from another process): events were lost, refetch state. */
  reset: boolean;
  /** The newest event id when the subscription began. */
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

export class EventBus<Type extends string = string> {
  private readonly buffer: BusEvent<Type>[] = [];
  private nextId = 1;
  private readonly subscribers = new Set<Subscriber<Type>>();
  private readonly publishWatchers = new Set<Listener<Type>>();

  constructor(
    readonly capacity = DEFAULT_EVENT_BUFFER,
    private readonly now: () => Date = () => new Date(),
  ) {}

  publish(input: PublishInput<Type>): BusEvent<Type> {
    const event: BusEvent<Type> = {
      id: this.nextId++,
      type: input.type,
      workspaceId: input.workspaceId,
      at: this.now().toISOString(),
      data: input.data,
    };
    this.buffer.push(event);
    if (this.buffer.length > this.capacity) this.buffer.shift();
    for (const watcher of this.publishWatchers) {
      try {
        watcher(event);
      } catch {
        // As for subscribers below.
      }
    }
    for (const subscriber of this.subscribers) {
      if (!matches(subscriber.filter, event)) continue;
      try {
        subscriber.listener(event);
      } catch {
        // A broken subscriber never breaks the publisher (an operation or a request).
      }
    }
    return event;
  }

  /**
   * Replay after `fromId` plus live events from now on, with nothing lost or repeated in between: the replay is
   * taken and the listener added in one synchronous step. `onClose` runs when the bus closes (shutdown).
   */
  subscribe(
    filter: EventFilter,
    listener: Listener<Type>,
    fromId?: number,
    onClose: () => void = () => {},
  ): Subscription<Type> {
    const lastId = this.nextId - 1;
    let replay: BusEvent<Type>[] = [];
    let reset = false;
    if (fromId !== undefined) {
      const oldest = this.buffer[0]?.id ?? this.nextId;
      if (fromId > lastId || fromId < oldest - 1) reset = true;
      else replay = this.buffer.filter((event) => event.id > fromId && matches(filter, event));
    }
    const subscriber: Subscriber<Type> = { filter, listener, onClose };
    this.subscribers.add(subscriber);
    return { replay, reset, lastId, unsubscribe: () => this.subscribers.delete(subscriber) };
  }

  /**
   * Calls `listener` with each event this process publishes, as it publishes it: what per-process counters (metrics)
   * count, which must not count another replica's events when the bus carries them too. Not a subscription: neither
   * counted nor closed with the streams.
   */
  watchPublished(listener: Listener<Type>): () => void {
    this.publishWatchers.add(listener);
    return () => this.publishWatchers.delete(listener);
  }

  /** Ends every subscription (their streams close), so a shutting-down server is not held open. */
  close(): void {
    const subscribers = [...this.subscribers];
    this.subscribers.clear();
    for (const subscriber of subscribers) subscriber.onClose();
  }

  /** The newest event id so far (0 before the first). */
  get latestId(): number {
    return this.nextId - 1;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }
}

function matches(filter: EventFilter, event: BusEvent): boolean {
  return filter.workspaceId === undefined || event.workspaceId === filter.workspaceId;
}

/**
 * The platform's event stream, in process: a bounded ring buffer of recent events with per-process, monotonically
 * increasing ids, and live subscribers. Events carry metadata only (ids, statuses, names, durations), never request
 * bodies, tokens or secret values. Ids restart at 1 when the process restarts.
 */

export type PlatformEventType =
  | "workspace.status"
  | "workspace.heartbeat"
  | "workspace.heartbeat_missed"
  | "operation.step"
  | "operation.finished"
  | "a2a.delivery";

export interface PlatformEvent {
  id: number;
  type: PlatformEventType;
  workspaceId: string | null;
  at: string;
  data: Record<string, unknown>;
}

export interface PublishInput {
  type: PlatformEventType;
  workspaceId: string | null;
  data: Record<string, unknown>;
}

export interface EventFilter {
  /** Only this workspace's events; unset means every event. */
  workspaceId?: string;
}

export interface Subscription {
  /** Buffered events after `fromId` that match the filter, oldest first (empty when `reset`). */
  replay: PlatformEvent[];
  /** `fromId` is older than the buffer (or from another process): events were lost, refetch state. */
  reset: boolean;
  /** The newest event id when the subscription began. */
  lastId: number;
  unsubscribe(): void;
}

type Listener = (event: PlatformEvent) => void;

interface Subscriber {
  filter: EventFilter;
  listener: Listener;
  onClose: () => void;
}

export const DEFAULT_EVENT_BUFFER = 1000;

export class EventBus {
  private readonly buffer: PlatformEvent[] = [];
  private nextId = 1;
  private readonly subscribers = new Set<Subscriber>();
  private readonly credentialWatchers = new Map<string, Set<() => void>>();

  constructor(
    readonly capacity = DEFAULT_EVENT_BUFFER,
    private readonly now: () => Date = () => new Date(),
  ) {}

  publish(input: PublishInput): PlatformEvent {
    const event: PlatformEvent = {
      id: this.nextId++,
      type: input.type,
      workspaceId: input.workspaceId,
      at: this.now().toISOString(),
      data: input.data,
    };
    this.buffer.push(event);
    if (this.buffer.length > this.capacity) this.buffer.shift();
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
    listener: Listener,
    fromId?: number,
    onClose: () => void = () => {},
  ): Subscription {
    const lastId = this.nextId - 1;
    let replay: PlatformEvent[] = [];
    let reset = false;
    if (fromId !== undefined) {
      const oldest = this.buffer[0]?.id ?? this.nextId;
      if (fromId > lastId || fromId < oldest - 1) reset = true;
      else replay = this.buffer.filter((event) => event.id > fromId && matches(filter, event));
    }
    const subscriber: Subscriber = { filter, listener, onClose };
    this.subscribers.add(subscriber);
    return { replay, reset, lastId, unsubscribe: () => this.subscribers.delete(subscriber) };
  }

  /** Ends every subscription (their streams close), so a shutting-down server is not held open. */
  close(): void {
    const subscribers = [...this.subscribers];
    this.subscribers.clear();
    this.credentialWatchers.clear();
    for (const subscriber of subscribers) subscriber.onClose();
  }

  /**
   * Calls `onChange` whenever `workspaceId`'s bearer tokens change in this process (rotated by registering again,
   * revoked with the workspace). Not an event: nothing is buffered or streamed, and it says nothing about which token.
   */
  watchCredentials(workspaceId: string, onChange: () => void): () => void {
    let watchers = this.credentialWatchers.get(workspaceId);
    if (!watchers) {
      watchers = new Set();
      this.credentialWatchers.set(workspaceId, watchers);
    }
    watchers.add(onChange);
    return () => {
      watchers.delete(onChange);
      if (watchers.size === 0 && this.credentialWatchers.get(workspaceId) === watchers) {
        this.credentialWatchers.delete(workspaceId);
      }
    };
  }

  /** Tells the watchers of `workspaceId` that its tokens changed; called once the change is committed. */
  credentialsChanged(workspaceId: string): void {
    for (const onChange of [...(this.credentialWatchers.get(workspaceId) ?? [])]) {
      try {
        onChange();
      } catch {
        // A broken watcher never breaks the request that changed the tokens.
      }
    }
  }

  /** The newest event id so far (0 before the first). */
  get latestId(): number {
    return this.nextId - 1;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }
}

function matches(filter: EventFilter, event: PlatformEvent): boolean {
  return filter.workspaceId === undefined || event.workspaceId === filter.workspaceId;
}

/**
 * What lets N replicas on one PostgreSQL keep things in memory and still behave as one: a feed of row changes and a
 * cache that the feed invalidates.
 *
 * The change feed. Database triggers (packages/db/drizzle/0007_change_notifications.sql and
 * 0011_operation_notifications.sql; the control plane's 0007 of the same name) send
 * `pg_notify('molecule_changes', '<table>:<key>')` for every committed change that a replica may have cached (and for
 * an operation queued), so no code path can forget to invalidate:
 *   tenant platform  `workspaces:<workspace id>` (insert, delete, any update except heartbeat bookkeeping:
 *                    last_heartbeat_at / updated_at alone notify nothing), `workspace_tokens:<workspace id>` (any),
 *                    `operations:<workspace id>` (insert only: an operation queued, which wakes every runner)
 *   control plane    `cp_orgs:<org id>` (any change but updated_at alone), `cp_tenant_credentials:<org id>` (any)
 *
 *   const feed = await ChangeFeed.start(database);         // one per process: one LISTEN connection
 *   feed.on("workspace_tokens", (workspaceId) => …);        // every committed change, from any replica, this one too
 *   feed.onReset(() => …);                                  // the LISTEN connection dropped or came back
 *   feed.connected                                          // false while notifications may be missed
 *   await feed.close();
 *
 * The cache. `InvalidatedCache` is what a hot path keeps between requests (an identity, a route):
 *
 *   const targets = new InvalidatedCache<string, Target>({ feed, topics: ["workspaces"] });
 *   const target = await targets.get(workspaceId, () => loadTarget(workspaceId));
 *   targets.peek(workspaceId)       // the cached value or undefined, synchronously (never loads)
 *   targets.invalidate(workspaceId) // this process changed it and must not wait for the notification
 *
 * Its promises: a value loaded before an invalidation of its key arrived is never stored (the load is returned to its
 * own callers, who asked before the change was known, but a later `get` loads again); while the feed is not
 * connected every `get` loads (nothing is served from memory when changes may be missed) and on reconnect the cache
 * starts empty; concurrent `get`s of one key share one load; entries are bounded (`maxEntries`, least recently used
 * goes first; the default holds 250,000). With `tagOf`, entries are also dropped by tag (`invalidateTag`): a cache
 * keyed by token hash, tagged with the token's workspace, is emptied of that workspace's tokens by
 * `feed.on("workspace_tokens", (id) => cache.invalidateTag(id))` (the `tagTopics` option does exactly that).
 *
 * A notification arrives a few milliseconds after its commit: another replica can serve the old value in between.
 * The replica that made a change sees it at once only if it invalidates itself after its commit.
 */

/** What the feed needs from the database (packages/db's `Database` has it). */
export interface NotificationSource {
  listen(
    channel: string,
    onNotify: (payload: string) => void,
    onConnect?: () => void,
    onDisconnect?: () => void,
  ): Promise<() => Promise<void>>;
}

export const CHANGE_CHANNEL = "molecule_changes";

type KeyHandler = (key: string) => void;

export class ChangeFeed {
  private readonly topics = new Map<string, Set<KeyHandler>>();
  private readonly resets = new Set<() => void>();
  private isConnected = false;
  private stop: (() => Promise<void>) | null = null;

  private constructor() {}

  /** Listens on `channel` (the triggers' by default); resolves once listening. */
  static async start(source: NotificationSource, channel = CHANGE_CHANNEL): Promise<ChangeFeed> {
    const feed = new ChangeFeed();
    feed.stop = await source.listen(
      channel,
      (payload) => feed.deliver(payload),
      () => feed.transition(true),
      () => feed.transition(false),
    );
    return feed;
  }

  /** False until listening and whenever the LISTEN connection is lost: changes may be missed meanwhile. */
  get connected(): boolean {
    return this.isConnected;
  }

  /** `fn(key)` for every committed change announced as `<topic>:<key>`. Returns the function that stops it. */
  on(topic: string, fn: KeyHandler): () => void {
    let handlers = this.topics.get(topic);
    if (!handlers) {
      handlers = new Set();
      this.topics.set(topic, handlers);
    }
    handlers.add(fn);
    return () => {
      handlers.delete(fn);
      if (handlers.size === 0 && this.topics.get(topic) === handlers) this.topics.delete(topic);
    };
  }

  /** `fn()` whenever `connected` changes: after either, anything derived from earlier notifications is stale. */
  onReset(fn: () => void): () => void {
    this.resets.add(fn);
    return () => this.resets.delete(fn);
  }

  async close(): Promise<void> {
    const stop = this.stop;
    this.stop = null;
    this.transition(false);
    this.topics.clear();
    this.resets.clear();
    await stop?.();
  }

  private deliver(payload: string): void {
    const colon = payload.indexOf(":");
    if (colon < 0) return;
    const handlers = this.topics.get(payload.slice(0, colon));
    if (!handlers) return;
    const key = payload.slice(colon + 1);
    for (const handler of [...handlers]) {
      try {
        handler(key);
      } catch {
        // one broken handler never stops the others
      }
    }
  }

  /** A connect is always a reset (even one whose drop was never seen); a disconnect only when connected. */
  private transition(connected: boolean): void {
    if (!connected && !this.isConnected) return;
    this.isConnected = connected;
    for (const reset of [...this.resets]) {
      try {
        reset();
      } catch {
        // as above
      }
    }
  }
}

export const DEFAULT_CACHE_ENTRIES = 250_000;

export interface InvalidatedCacheOptions<V> {
  feed: ChangeFeed;
  /** Change-feed topics whose key is this cache's key: each change invalidates it. */
  topics?: string[];
  /** Change-feed topics whose key is a tag (see `tagOf`): each change drops that tag's entries. */
  tagTopics?: string[];
  /** A second key an entry can be dropped by (`invalidateTag`), e.g. the workspace a token belongs to. */
  tagOf?: (value: V) => string | null;
  /** Whether a loaded value is kept (default: all are); e.g. not an unknown token, which anyone can make up. */
  keep?: (value: V) => boolean;
  maxEntries?: number;
}

interface Flight<V> {
  promise: Promise<V>;
  /** An invalidation of its key (or of everything) arrived while it loaded: its value is not stored. */
  stale: boolean;
}

interface Entry<V> {
  value: V;
  tag: string | null;
}

export class InvalidatedCache<K extends string, V> {
  private readonly entries = new Map<K, Entry<V>>();
  private readonly tagged = new Map<string, Set<K>>();
  private readonly flights = new Map<K, Flight<V>>();
  private readonly maxEntries: number;
  private readonly unsubscribe: (() => void)[] = [];

  constructor(private readonly options: InvalidatedCacheOptions<V>) {
    this.maxEntries = options.maxEntries ?? DEFAULT_CACHE_ENTRIES;
    const { feed } = options;
    for (const topic of options.topics ?? []) {
      this.unsubscribe.push(feed.on(topic, (key) => this.invalidate(key as K)));
    }
    for (const topic of options.tagTopics ?? []) {
      this.unsubscribe.push(feed.on(topic, (tag) => this.invalidateTag(tag)));
    }
    this.unsubscribe.push(feed.onReset(() => this.clear()));
  }

  /** The value for `key`: from memory when the feed is connected and it is cached, else from `load`. */
  get(key: K, load: () => Promise<V>): Promise<V> {
    if (!this.options.feed.connected) return load();
    const entry = this.entries.get(key);
    if (entry) {
      this.entries.delete(key); // most recently used goes last, so eviction takes the oldest first
      this.entries.set(key, entry);
      return Promise.resolve(entry.value);
    }
    const flying = this.flights.get(key);
    if (flying) return flying.promise;
    const flight = { stale: false } as Flight<V>;
    flight.promise = this.fly(key, flight, load);
    this.flights.set(key, flight);
    return flight.promise;
  }

  /** The cached value, or undefined when there is none or the feed is not connected. Never loads. */
  peek(key: K): V | undefined {
    if (!this.options.feed.connected) return undefined;
    return this.entries.get(key)?.value;
  }

  invalidate(key: K): void {
    const flight = this.flights.get(key);
    if (flight) {
      flight.stale = true;
      this.flights.delete(key); // a get from now on loads afresh instead of joining the stale load
    }
    const entry = this.entries.get(key);
    if (entry) this.remove(key, entry);
  }

  /** Drops every entry tagged `tag`; loads in flight are not stored (their tag is not known yet). */
  invalidateTag(tag: string): void {
    this.abandonFlights();
    for (const key of [...(this.tagged.get(tag) ?? [])]) {
      const entry = this.entries.get(key);
      if (entry) this.remove(key, entry);
    }
  }

  clear(): void {
    this.abandonFlights();
    this.entries.clear();
    this.tagged.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  /** Stops following the feed (the cache keeps working, bypassed whenever the feed is). */
  close(): void {
    for (const stop of this.unsubscribe.splice(0)) stop();
    this.clear();
  }

  private async fly(key: K, flight: Flight<V>, load: () => Promise<V>): Promise<V> {
    try {
      const value = await load();
      if (!flight.stale && this.options.feed.connected && (this.options.keep?.(value) ?? true)) {
        this.store(key, value);
      }
      return value;
    } finally {
      if (this.flights.get(key) === flight) this.flights.delete(key);
    }
  }

  private abandonFlights(): void {
    for (const flight of this.flights.values()) flight.stale = true;
    this.flights.clear();
  }

  private store(key: K, value: V): void {
    const previous = this.entries.get(key);
    if (previous) this.remove(key, previous);
    const tag = this.options.tagOf?.(value) ?? null;
    this.entries.set(key, { value, tag });
    if (tag !== null) {
      let keys = this.tagged.get(tag);
      if (!keys) {
        keys = new Set();
        this.tagged.set(tag, keys);
      }
      keys.add(key);
    }
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      const oldestEntry = this.entries.get(oldest.value);
      if (oldestEntry) this.remove(oldest.value, oldestEntry);
    }
  }

  private remove(key: K, entry: Entry<V>): void {
    this.entries.delete(key);
    if (entry.tag === null) return;
    const keys = this.tagged.get(entry.tag);
    keys?.delete(key);
    if (keys?.size === 0) this.tagged.delete(entry.tag);
  }
}

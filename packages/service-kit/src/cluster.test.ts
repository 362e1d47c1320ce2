import { createDatabase, workspaces, workspaceTokens } from "@molecule/db";
import { eq } from "drizzle-orm";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_DATABASE_URL, createTestDatabase, type TestDatabase } from "../../../test-support/pg.ts";
import { waitFor } from "../../../test-support/wait.ts";
import { CHANGE_CHANNEL, ChangeFeed, InvalidatedCache, type NotificationSource } from "./cluster.ts";

/** A channel in memory that can be cut and restored: what a LISTEN connection does, without the network. */
class MemoryChannel implements NotificationSource {
  private subscriber: {
    onNotify: (p: string) => void;
    onConnect?: () => void;
    onDisconnect?: () => void;
  } | null = null;

  async listen(
    _channel: string,
    onNotify: (payload: string) => void,
    onConnect?: () => void,
    onDisconnect?: () => void,
  ): Promise<() => Promise<void>> {
    this.subscriber = { onNotify, onConnect, onDisconnect };
    onConnect?.();
    return async () => {
      this.subscriber = null;
    };
  }

  send(payload: string): void {
    this.subscriber?.onNotify(payload);
  }
  drop(): void {
    this.subscriber?.onDisconnect?.();
  }
  restore(): void {
    this.subscriber?.onConnect?.();
  }
}

function deferred<T>() {
  let resolve: (value: T) => void = () => {};
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe("InvalidatedCache over a feed in memory", () => {
  it("serves from memory until its key is invalidated, then loads again", async () => {
    const channel = new MemoryChannel();
    const feed = await ChangeFeed.start(channel);
    const cache = new InvalidatedCache<string, string>({ feed, topics: ["workspaces"] });
    let loads = 0;
    const load = async () => `v${++loads}`;
    expect(await cache.get("ws_1", load)).toBe("v1");
    expect(await cache.get("ws_1", load)).toBe("v1");
    expect(cache.peek("ws_1")).toBe("v1");
    channel.send("workspace_tokens:ws_1"); // another topic: not this cache's
    expect(cache.peek("ws_1")).toBe("v1");
    channel.send("workspaces:ws_1");
    expect(cache.peek("ws_1")).toBeUndefined();
    expect(await cache.get("ws_1", load)).toBe("v2");
  });

  it("a load that began before an invalidation is returned to its callers but never stored or joined", async () => {
    const channel = new MemoryChannel();
    const feed = await ChangeFeed.start(channel);
    const cache = new InvalidatedCache<string, string>({ feed, topics: ["workspaces"] });
    const old = deferred<string>();
    const first = cache.get("ws_1", () => old.promise);
    const joined = cache.get("ws_1", async () => "not called: joins the first load");
    channel.send("workspaces:ws_1");
    const after = cache.get("ws_1", async () => "new");
    old.resolve("old");
    expect(await first).toBe("old");
    expect(await joined).toBe("old");
    expect(await after).toBe("new");
    expect(cache.peek("ws_1")).toBe("new");
  });

  it("while the feed is disconnected every get loads; on reconnect it starts empty", async () => {
    const channel = new MemoryChannel();
    const feed = await ChangeFeed.start(channel);
    const cache = new InvalidatedCache<string, number>({ feed });
    let loads = 0;
    const load = async () => ++loads;
    await cache.get("k", load);
    await cache.get("k", load);
    expect(loads).toBe(1);
    const pending = deferred<number>();
    const inFlight = cache.get("other", () => pending.promise);
    channel.drop();
    expect(feed.connected).toBe(false);
    expect(cache.peek("k")).toBeUndefined();
    await cache.get("k", load);
    await cache.get("k", load);
    expect(loads).toBe(3);
    pending.resolve(7);
    expect(await inFlight).toBe(7);
    channel.restore();
    expect(feed.connected).toBe(true);
    expect(cache.size).toBe(0); // neither what was cached before the drop nor the load that spanned it
    await cache.get("k", load);
    await cache.get("k", load);
    expect(loads).toBe(4);
  });

  it("is bounded, dropping the least recently used; tags drop every entry they name; keep filters", async () => {
    const feed = await ChangeFeed.start(new MemoryChannel());
    const cache = new InvalidatedCache<string, { workspace: string } | null>({
      feed,
      maxEntries: 3,
      tagOf: (value) => value?.workspace ?? null,
      keep: (value) => value !== null,
    });
    for (const key of ["a", "b", "c"]) await cache.get(key, async () => ({ workspace: "ws_1" }));
    await cache.get("a", async () => null); // a hit: "a" becomes the most recent
    await cache.get("d", async () => ({ workspace: "ws_2" }));
    expect(cache.peek("b")).toBeUndefined();
    expect(cache.size).toBe(3);
    cache.invalidateTag("ws_1");
    expect(cache.size).toBe(1);
    expect(cache.peek("d")).toEqual({ workspace: "ws_2" });
    expect(await cache.get("unknown", async () => null)).toBeNull();
    expect(cache.peek("unknown")).toBeUndefined();
  });

  it("holds 100,000 entries", async () => {
    const feed = await ChangeFeed.start(new MemoryChannel());
    const cache = new InvalidatedCache<string, number>({ feed });
    for (let i = 0; i < 100_000; i++) await cache.get(`ws_${i}`, async () => i);
    expect(cache.size).toBe(100_000);
    expect(cache.peek("ws_0")).toBe(0);
  });
});

describe("ChangeFeed and InvalidatedCache on PostgreSQL", () => {
  let database: TestDatabase;
  let writer: Awaited<ReturnType<typeof createDatabase>>;
  let feed: ChangeFeed;
  let admin: postgres.Sql;

  beforeAll(async () => {
    database = await createTestDatabase();
    writer = await createDatabase({ url: database.url, maxConnections: 1 });
    feed = await ChangeFeed.start(database);
    admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  });

  afterAll(async () => {
    await feed?.close();
    await writer?.close();
    await admin?.end();
    await database?.drop();
  });

  const row = (id: string) => ({
    id,
    orgId: "org_1",
    name: id,
    runtime: "echo",
    tier: 1,
    backend: "docker",
    status: "online" as const,
  });
  /** Waits until every notification of what was committed so far has arrived (one sent after them has). */
  let markers = 0;
  async function drain(): Promise<void> {
    const marker = `${++markers}`;
    const arrived = deferred<void>();
    const stop = feed.on("marker", (key) => key === marker && arrived.resolve());
    await writer.notify(CHANGE_CHANNEL, `marker:${marker}`);
    await arrived.promise;
    stop();
  }
  const statusOf = async (id: string) =>
    (await database.db.select({ status: workspaces.status }).from(workspaces).where(eq(workspaces.id, id)))[0]
      ?.status;

  it("a write through another connection invalidates the cached value", async () => {
    const cache = new InvalidatedCache<string, string | undefined>({ feed, topics: ["workspaces"] });
    await writer.db.insert(workspaces).values(row("ws_w"));
    await drain();
    expect(await cache.get("ws_w", () => statusOf("ws_w"))).toBe("online");
    expect(cache.peek("ws_w")).toBe("online");
    await writer.db.update(workspaces).set({ status: "degraded" }).where(eq(workspaces.id, "ws_w"));
    await waitFor(
      "the invalidation",
      async () => (cache.peek("ws_w") === undefined ? true : undefined),
      10_000,
      10,
    );
    expect(await cache.get("ws_w", () => statusOf("ws_w"))).toBe("degraded");
  });

  it("a heartbeat write leaves the cached value alone", async () => {
    const cache = new InvalidatedCache<string, string | undefined>({ feed, topics: ["workspaces"] });
    await writer.db.insert(workspaces).values(row("ws_h"));
    await drain();
    await cache.get("ws_h", () => statusOf("ws_h"));
    await writer.db.update(workspaces).set({ lastHeartbeatAt: new Date() }).where(eq(workspaces.id, "ws_h"));
    await drain();
    expect(cache.peek("ws_h")).toBe("online");
  });

  it("a load that read the row before a concurrent change is not cached", async () => {
    const cache = new InvalidatedCache<string, string | undefined>({ feed, topics: ["workspaces"] });
    await writer.db.insert(workspaces).values(row("ws_r"));
    await drain();
    const readDone = deferred<void>();
    const release = deferred<void>();
    const racing = cache.get("ws_r", async () => {
      const status = await statusOf("ws_r");
      readDone.resolve();
      await release.promise;
      return status;
    });
    await readDone.promise;
    const arrived = deferred<void>();
    const stop = feed.on("workspaces", (id) => id === "ws_r" && arrived.resolve());
    await writer.db.update(workspaces).set({ status: "offline" }).where(eq(workspaces.id, "ws_r"));
    await arrived.promise;
    stop();
    release.resolve();
    expect(await racing).toBe("online"); // what it read, for the caller who asked before the change
    expect(cache.peek("ws_r")).toBeUndefined();
    expect(await cache.get("ws_r", () => statusOf("ws_r"))).toBe("offline");
  });

  it("a token change drops the tokens of that workspace (tagged entries)", async () => {
    const tokens = new InvalidatedCache<string, string | null>({
      feed,
      tagTopics: ["workspace_tokens"],
      tagOf: (workspaceId) => workspaceId,
    });
    await writer.db.insert(workspaces).values(row("ws_k"));
    await writer.db
      .insert(workspaceTokens)
      .values({ tokenHash: "hash_k", workspaceId: "ws_k", kind: "auth" });
    await drain();
    const lookup = async () =>
      (
        await database.db
          .select({ workspaceId: workspaceTokens.workspaceId })
          .from(workspaceTokens)
          .where(eq(workspaceTokens.tokenHash, "hash_k"))
      )[0]?.workspaceId ?? null;
    expect(await tokens.get("hash_k", lookup)).toBe("ws_k");
    await writer.db.delete(workspaceTokens).where(eq(workspaceTokens.tokenHash, "hash_k"));
    await waitFor(
      "the revocation",
      async () => (tokens.peek("hash_k") === undefined ? true : undefined),
      10_000,
      10,
    );
    expect(await tokens.get("hash_k", lookup)).toBeNull();
  });

  it("a killed LISTEN connection: bypassed while it is down, emptied when it is back, invalidated again after", async () => {
    const cache = new InvalidatedCache<string, string | undefined>({ feed, topics: ["workspaces"] });
    await writer.db.insert(workspaces).values(row("ws_d"));
    await drain();
    await cache.get("ws_d", () => statusOf("ws_d"));
    const seen: { connected: boolean; peek: string | undefined; loaded: boolean }[] = [];
    const stop = feed.onReset(() => {
      let loaded = false;
      void cache.get("ws_d", async () => {
        loaded = true;
        return "from the database";
      });
      seen.push({ connected: feed.connected, peek: cache.peek("ws_d"), loaded });
    });
    const killed = await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE datname = ${new URL(database.url).pathname.slice(1)} AND application_name = 'molecule-listen'`;
    expect(killed.length).toBe(1);
    await waitFor("the reconnect", async () => (seen.length >= 2 ? true : undefined), 10_000, 20);
    stop();
    expect(seen[0]).toEqual({ connected: false, peek: undefined, loaded: true });
    // back: what was cached before the drop is gone (the get above loads instead of hitting)
    expect(seen[1]).toEqual({ connected: true, peek: undefined, loaded: true });
    // listening again: a change still invalidates
    cache.clear();
    expect(await cache.get("ws_d", () => statusOf("ws_d"))).toBe("online");
    await writer.db.update(workspaces).set({ status: "offline" }).where(eq(workspaces.id, "ws_d"));
    await waitFor(
      "the invalidation",
      async () => (cache.peek("ws_d") === undefined ? true : undefined),
      10_000,
      10,
    );
  });
});

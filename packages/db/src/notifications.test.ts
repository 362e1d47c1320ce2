import { eq } from "drizzle-orm";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_DATABASE_URL, createTestDatabase, type TestDatabase } from "../../../test-support/pg.ts";
import { waitFor } from "../../../test-support/wait.ts";
import { createDatabase } from "./client.ts";
import { operations, workspaces, workspaceTokens } from "./schema/index.ts";

const CHANNEL = "molecule_changes";

let database: TestDatabase;
let other: TestDatabase["db"];
let closeOther: () => Promise<void>;
const received: string[] = [];
let stop: () => Promise<void>;

beforeAll(async () => {
  database = await createTestDatabase();
  const second = await createDatabase({ url: database.url, maxConnections: 1 });
  other = second.db;
  closeOther = () => second.close();
  stop = await database.listen(CHANNEL, (payload) => received.push(payload));
});

afterAll(async () => {
  await stop?.();
  await closeOther?.();
  await database?.drop();
});

/** Writes through another connection, then a marker, and answers what arrived before the marker. */
async function changesOf(write: () => Promise<unknown>): Promise<string[]> {
  received.length = 0;
  await write();
  const marker = `marker:${Math.random()}`;
  await database.notify(CHANNEL, marker);
  await waitFor("the marker", async () => (received.includes(marker) ? true : undefined), 10_000, 10);
  return received.filter((payload) => payload !== marker);
}

const row = (id: string) => ({
  id,
  orgId: "org_1",
  name: id,
  runtime: "echo",
  tier: 1,
  backend: "docker",
  status: "provisioning" as const,
});

describe("row-change notifications (triggers)", () => {
  it("a workspace's insert, status change and delete each announce it; a heartbeat or activity write announces nothing", async () => {
    expect(await changesOf(() => other.insert(workspaces).values(row("ws_a")))).toEqual(["workspaces:ws_a"]);
    expect(
      await changesOf(() =>
        other
          .update(workspaces)
          .set({ lastHeartbeatAt: new Date(), updatedAt: new Date() })
          .where(eq(workspaces.id, "ws_a")),
      ),
    ).toEqual([]);
    // Activity bookkeeping (A2A messages, reported activity) is written in batches like heartbeats.
    expect(
      await changesOf(() =>
        other.update(workspaces).set({ lastActivityAt: new Date() }).where(eq(workspaces.id, "ws_a")),
      ),
    ).toEqual([]);
    expect(
      await changesOf(() =>
        other.update(workspaces).set({ status: "online" }).where(eq(workspaces.id, "ws_a")),
      ),
    ).toEqual(["workspaces:ws_a"]);
    expect(
      await changesOf(() =>
        other
          .update(workspaces)
          .set({ metadata: { team: "x" } })
          .where(eq(workspaces.id, "ws_a")),
      ),
    ).toEqual(["workspaces:ws_a"]);
    // a write that changes nothing at all is no change
    expect(
      await changesOf(() =>
        other.update(workspaces).set({ status: "online" }).where(eq(workspaces.id, "ws_a")),
      ),
    ).toEqual([]);
  });

  it("any change to a workspace's tokens announces the workspace", async () => {
    expect(await changesOf(() => other.insert(workspaces).values(row("ws_t")))).toEqual(["workspaces:ws_t"]);
    expect(
      await changesOf(() =>
        other.insert(workspaceTokens).values({ tokenHash: "h1", workspaceId: "ws_t", kind: "auth" }),
      ),
    ).toEqual(["workspace_tokens:ws_t"]);
    expect(
      await changesOf(() =>
        other.update(workspaceTokens).set({ spentAt: new Date() }).where(eq(workspaceTokens.tokenHash, "h1")),
      ),
    ).toEqual(["workspace_tokens:ws_t"]);
    expect(
      await changesOf(() => other.delete(workspaceTokens).where(eq(workspaceTokens.workspaceId, "ws_t"))),
    ).toEqual(["workspace_tokens:ws_t"]);
    expect(await changesOf(() => other.delete(workspaces).where(eq(workspaces.id, "ws_t")))).toEqual([
      "workspaces:ws_t",
    ]);
  });

  it("a queued operation announces its workspace; the runner's writes to it announce nothing", async () => {
    expect(await changesOf(() => other.insert(workspaces).values(row("ws_op")))).toEqual([
      "workspaces:ws_op",
    ]);
    expect(
      await changesOf(() =>
        other.insert(operations).values({ id: "op_1", workspaceId: "ws_op", kind: "provision" }),
      ),
    ).toEqual(["operations:ws_op"]);
    expect(
      await changesOf(() =>
        other
          .update(operations)
          .set({ status: "running", lockedBy: "runner", attempts: 1 })
          .where(eq(operations.id, "op_1")),
      ),
    ).toEqual([]);
    expect(
      await changesOf(() =>
        other
          .update(operations)
          .set({ status: "succeeded", finishedAt: new Date() })
          .where(eq(operations.id, "op_1")),
      ),
    ).toEqual([]);
  });

  it("a rolled back change announces nothing; many in one transaction are folded", async () => {
    expect(await changesOf(() => other.insert(workspaces).values(row("ws_r")))).toEqual(["workspaces:ws_r"]);
    expect(
      await changesOf(() =>
        other
          .transaction(async (tx) => {
            await tx.update(workspaces).set({ status: "online" }).where(eq(workspaces.id, "ws_r"));
            throw new Error("rolled back");
          })
          .catch(() => {}),
      ),
    ).toEqual([]);
    expect(
      await changesOf(() =>
        other.transaction(async (tx) => {
          await tx.update(workspaces).set({ status: "online" }).where(eq(workspaces.id, "ws_r"));
          await tx.update(workspaces).set({ statusReason: "up" }).where(eq(workspaces.id, "ws_r"));
        }),
      ),
    ).toEqual(["workspaces:ws_r"]);
  });
});

describe("listen and notify", () => {
  it("PostgreSQL: close() ends the dedicated LISTEN connection", async () => {
    const mine = await createDatabase({ url: database.url, maxConnections: 1 });
    const names = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
    const dbName = new URL(database.url).pathname.slice(1);
    const listeners = async () =>
      (
        await names`SELECT pid FROM pg_stat_activity
          WHERE datname = ${dbName} AND application_name = 'molecule-listen' AND query ILIKE 'LISTEN%'`
      ).length;
    try {
      const before = await listeners();
      await mine.listen("some_channel", () => {});
      expect(await listeners()).toBe(before + 1);
      await mine.close();
      await waitFor(
        "the listener gone",
        async () => ((await listeners()) === before ? true : undefined),
        10_000,
        50,
      );
    } finally {
      await names.end();
    }
  });

  it("PostgreSQL: a dropped LISTEN connection says so, comes back and says so", async () => {
    const events: string[] = [];
    const payloads: string[] = [];
    const mine = await createDatabase({ url: database.url, maxConnections: 1 });
    const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
    try {
      await mine.listen(
        "drop_test",
        (payload) => payloads.push(payload),
        () => events.push("connect"),
        () => events.push("disconnect"),
      );
      expect(events).toEqual(["connect"]);
      await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE application_name = 'molecule-listen' AND query ILIKE 'LISTEN drop_test%'`;
      await waitFor("the reconnect", async () => (events.length >= 3 ? true : undefined), 10_000, 20);
      expect(events).toEqual(["connect", "disconnect", "connect"]);
      await database.notify("drop_test", "after");
      await waitFor("a notification after the reconnect", async () =>
        payloads.includes("after") ? true : undefined,
      );
    } finally {
      await admin.end();
      await mine.close();
    }
  });

  it("the embedded database (PGlite): its own notifications reach its listeners, and the triggers run", async () => {
    const embedded = await createDatabase({ dataDir: "memory://" });
    try {
      await embedded.migrate();
      const payloads: string[] = [];
      let connects = 0;
      const unlisten = await embedded.listen(
        CHANNEL,
        (payload) => payloads.push(payload),
        () => connects++,
      );
      expect(connects).toBe(1);
      await embedded.db.insert(workspaces).values(row("ws_p"));
      await embedded.db
        .update(workspaces)
        .set({ lastHeartbeatAt: new Date() })
        .where(eq(workspaces.id, "ws_p"));
      await embedded.notify(CHANNEL, "marker");
      await waitFor("the marker", async () => (payloads.includes("marker") ? true : undefined), 10_000, 10);
      expect(payloads).toEqual(["workspaces:ws_p", "marker"]);
      await unlisten();
      await embedded.notify(CHANNEL, "after");
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(payloads).not.toContain("after");
    } finally {
      await embedded.close();
    }
  });
});

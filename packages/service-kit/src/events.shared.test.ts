import { Writable } from "node:stream";
import { createDatabase, type Database } from "@molecule/db";
import pino from "pino";
import postgres from "postgres";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ADMIN_DATABASE_URL, createTestDatabase, type TestDatabase } from "../../../test-support/pg.ts";
import { waitFor } from "../../../test-support/wait.ts";
import { type BusEvent, EventBus, MAX_NOTIFY_BYTES } from "./events.ts";

/** Two replicas' buses on one database, each over its own connections, as two processes would have. */
const SHARING = { channel: "platform_events", sequence: "platform_event_ids" };
const errors: string[] = [];
const logger = pino(
  { level: "error" },
  new Writable({
    write(chunk, _encoding, done) {
      errors.push(JSON.parse(String(chunk)).msg);
      done();
    },
  }),
);

let database: TestDatabase;
let second: Database;
let a: EventBus;
let b: EventBus;

beforeAll(async () => {
  database = await createTestDatabase();
  second = await createDatabase({ url: database.url, maxConnections: 2 });
  a = new EventBus(50);
  b = new EventBus(50);
  await a.share({ db: database.db, listen: database.listen, logger, ...SHARING });
  await b.share({ db: second.db, listen: second.listen, logger, ...SHARING });
});

afterAll(async () => {
  a?.close();
  b?.close();
  await second?.close();
  await database?.drop();
});

function collect(bus: EventBus): BusEvent[] {
  const seen: BusEvent[] = [];
  bus.subscribe({}, (event) => seen.push(event));
  return seen;
}

it("an event published on one replica reaches both, with the same id, in the same order", async () => {
  const onA = collect(a);
  const onB = collect(b);
  a.publish({ type: "one", workspaceId: "ws_1", data: { n: 1 } });
  b.publish({ type: "two", workspaceId: null, data: { n: 2 } });
  a.publish({ type: "three", workspaceId: "ws_1", data: { n: 3 } });
  await waitFor("three events on both", async () =>
    onA.length === 3 && onB.length === 3 ? true : undefined,
  );
  expect(onB).toEqual(onA);
  expect(new Set(onA.map((event) => event.id)).size).toBe(3);
  expect(onA.map((event) => event.type).sort()).toEqual(["one", "three", "two"]);
  expect(errors).toEqual([]);
});

it("a client resumes on the other replica after the id it last saw on the first", async () => {
  const onA = collect(a);
  for (let i = 0; i < 5; i++) a.publish({ type: "tick", workspaceId: i % 2 ? "ws_odd" : null, data: { i } });
  await waitFor("five events", async () => (onA.length === 5 ? true : undefined));
  await b.drain();
  await waitFor("b caught up", async () => (b.latestId === a.latestId ? true : undefined));
  const lastSeen = onA[1]?.id ?? -1;
  const resumed = b.subscribe({}, () => {}, lastSeen);
  expect(resumed.reset).toBe(false);
  expect(resumed.replay.map((event) => event.id)).toEqual(onA.slice(2).map((event) => event.id));
  const filtered = b.subscribe({ workspaceId: "ws_odd" }, () => {}, lastSeen);
  expect(filtered.replay.map((event) => event.data.i)).toEqual([3]);
  expect(b.subscribe({}, () => {}, 987_654_321).reset).toBe(true);
  expect(b.subscribe({}, () => {}, b.latestId)).toMatchObject({ reset: false, replay: [] });
});

it("a batch larger than one NOTIFY is split; an oversized event arrives with its data left out", async () => {
  const onB = collect(b);
  const many = Array.from({ length: 400 }, (_, i) => ({ type: "beat", workspaceId: `ws_${i}`, data: { i } }));
  a.publishMany([
    ...many,
    { type: "huge", workspaceId: "ws_huge", data: { blob: "x".repeat(MAX_NOTIFY_BYTES * 2) } },
    { type: "bigint", workspaceId: null, data: { n: 1n } },
  ]);
  await waitFor("every event", async () => (onB.length === 402 ? true : undefined));
  expect(onB.slice(0, 400).map((event) => event.data.i)).toEqual(many.map((event) => event.data.i));
  expect(onB[400]).toMatchObject({ type: "huge", workspaceId: "ws_huge", data: { truncated: true } });
  expect(onB[401]).toMatchObject({ type: "bigint", data: { truncated: true } });
  expect(new Set(onB.map((event) => event.id)).size).toBe(402);
});

it("a failed NOTIFY is logged, never thrown at the publisher", async () => {
  const broken = new EventBus();
  const brokenDb = await createDatabase({ url: database.url, maxConnections: 1 });
  await broken.share({
    db: brokenDb.db,
    listen: brokenDb.listen,
    logger,
    ...SHARING,
    sequence: "no_such_sequence",
  });
  errors.length = 0;
  expect(() => broken.publish({ type: "lost", workspaceId: null, data: {} })).not.toThrow();
  await broken.drain();
  expect(errors).toEqual(["publishing events failed; they are lost"]);
  broken.close();
  await brokenDb.close();
});

it("a dropped LISTEN connection empties the buffer and ends open streams (their clients resume with a reset)", async () => {
  const isolated = new EventBus();
  const own = await createDatabase({ url: database.url, maxConnections: 1 });
  await isolated.share({ db: own.db, listen: own.listen, logger, ...SHARING });
  const seen = collect(isolated);
  a.publish({ type: "before", workspaceId: null, data: {} });
  await waitFor("the event", async () => (seen.length === 1 ? true : undefined));
  const before = seen[0]?.id ?? -1;
  let ended = false;
  isolated.subscribe(
    {},
    () => {},
    undefined,
    () => {
      ended = true;
    },
  );
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    // every listener of this database: the replicas' too, which come back the same way
    await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE datname = ${new URL(database.url).pathname.slice(1)} AND application_name = 'molecule-listen'`;
  } finally {
    await admin.end();
  }
  await waitFor("the stream ended", async () => (ended ? true : undefined), 10_000, 20);
  expect(isolated.subscribe({}, () => {}, before).reset).toBe(true);
  const after = collect(isolated);
  a.publish({ type: "after", workspaceId: null, data: {} });
  await waitFor("events again", async () => (after.length === 1 ? true : undefined));
  isolated.close();
  await own.close();
});

it("on the embedded database (one process) the shared bus delivers its own events, ids from the sequence", async () => {
  const embedded = await createDatabase({ dataDir: "memory://" });
  const bus = new EventBus();
  try {
    await embedded.migrate();
    await bus.share({ db: embedded.db, listen: embedded.listen, logger, ...SHARING });
    const seen = collect(bus);
    bus.publishMany([
      { type: "one", workspaceId: "ws_1", data: {} },
      { type: "two", workspaceId: null, data: {} },
    ]);
    await waitFor("both events", async () => (seen.length === 2 ? true : undefined));
    expect(seen.map((event) => [event.id, event.type])).toEqual([
      [1, "one"],
      [2, "two"],
    ]);
    expect(bus.subscribe({}, () => {}, 1).replay.map((event) => event.type)).toEqual(["two"]);
  } finally {
    bus.close();
    await embedded.close();
  }
});

it("watchPublished sees this replica's own events only, where per-process metrics count them", async () => {
  const published = { a: [] as string[], b: [] as string[] };
  const stops = [
    a.watchPublished((event) => published.a.push(event.type)),
    b.watchPublished((event) => published.b.push(event.type)),
  ];
  const onB = collect(b);
  a.publish({ type: "counted-once", workspaceId: null, data: {} });
  await waitFor("the event on b", async () =>
    onB.some((event) => event.type === "counted-once") ? true : undefined,
  );
  for (const stop of stops) stop();
  expect(published).toEqual({ a: ["counted-once"], b: [] });
});

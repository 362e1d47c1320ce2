import { describe, expect, it } from "vitest";
import type { A2ATask, TaskState } from "./a2a-protocol.ts";
import { InMemoryTaskStore } from "./task-store.ts";

const task = (id: string, state: TaskState, contextId = "ctx"): A2ATask => ({
  kind: "task",
  id,
  contextId,
  status: { state, timestamp: new Date().toISOString() },
  history: [],
});

describe("InMemoryTaskStore", () => {
  it("answers copies: changing what it gave changes nothing stored", async () => {
    const store = new InMemoryTaskStore();
    const saved = task("t1", "working");
    await store.save(saved);
    saved.status.state = "failed";
    const loaded = await store.load("t1");
    expect(loaded?.status.state).toBe("working");
    if (loaded) loaded.history.push({ role: "user", parts: [], messageId: "m" });
    expect((await store.load("t1"))?.history).toEqual([]);
    expect(await store.load("t2")).toBeUndefined();
  });

  it("lists by context and state, most recently updated first", async () => {
    const store = new InMemoryTaskStore();
    await store.save(task("a", "completed", "c1"));
    await store.save(task("b", "working", "c1"));
    await store.save(task("c", "completed", "c2"));
    await store.save(task("a", "completed", "c1"));
    expect((await store.list({})).map((t) => t.id)).toEqual(["a", "c", "b"]);
    expect((await store.list({ contextId: "c1" })).map((t) => t.id)).toEqual(["a", "b"]);
    expect((await store.list({ state: "completed" })).map((t) => t.id)).toEqual(["a", "c"]);
  });

  it("past its cap drops the oldest finished task first, then the least recently updated", async () => {
    const store = new InMemoryTaskStore({ maxTasks: 2 });
    await store.save(task("running", "working"));
    await store.save(task("done", "completed"));
    await store.save(task("new", "submitted"));
    expect((await store.list({})).map((t) => t.id)).toEqual(["new", "running"]);
    await store.save(task("newer", "working"));
    expect((await store.list({})).map((t) => t.id)).toEqual(["newer", "new"]);
    expect(store.size).toBe(2);
    expect(() => new InMemoryTaskStore({ maxTasks: 0 })).toThrow(TypeError);
  });

  it("keeps to its byte cap the same way, but keeps the task just saved", async () => {
    const store = new InMemoryTaskStore({ maxBytes: 1_300 });
    const big = (id: string, state: TaskState) => ({
      ...task(id, state),
      history: [{ role: "user" as const, parts: [{ kind: "text", text: "x".repeat(400) }], messageId: id }],
    });
    await store.save(big("a", "completed"));
    await store.save(big("b", "working"));
    expect(store.size).toBe(2);
    await store.save(big("c", "working"));
    expect((await store.list({})).map((t) => t.id)).toEqual(["c", "b"]);
    await store.save({ ...big("huge", "working"), metadata: { pad: "y".repeat(2_000) } });
    expect((await store.list({})).map((t) => t.id)).toEqual(["huge"]);
    expect(store.bytes).toBe(JSON.stringify(await store.load("huge")).length);
    expect(() => new InMemoryTaskStore({ maxBytes: 0 })).toThrow(TypeError);
  });
});

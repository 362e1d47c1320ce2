/**
 * The tasks running in this process: each one's current state, who is following it (the stream that started it,
 * `tasks/resubscribe` streams), and how to stop it (`tasks/cancel`, server close). Every change is applied to the
 * task, saved to the store, then handed to the followers in order; a task leaves the hub when it stops running
 * (a terminal or interrupted state), and from then on the store alone answers for it.
 */
import type {
  A2ATask,
  Part,
  TaskArtifactUpdateEvent,
  TaskStatus,
  TaskStatusUpdateEvent,
  TextPart,
} from "./a2a-protocol.ts";
import type { TaskStore } from "./task-store.ts";

export type TaskUpdate = TaskStatusUpdateEvent | TaskArtifactUpdateEvent;
/** Gets each update of a task; the hub waits for it before the next, so a slow reader slows the task. */
export type TaskListener = (update: TaskUpdate) => Promise<void> | void;

export interface TaskRun {
  readonly id: string;
  /** The task as it stands; changed only by the hub. */
  readonly task: A2ATask;
  /** Aborted by `tasks/cancel`. */
  readonly stop: AbortController;
  /** True once the run has reached its last status. */
  readonly finished: boolean;
}

interface Run extends TaskRun {
  task: A2ATask;
  finished: boolean;
  listeners: Set<TaskListener>;
  saved: Promise<void>;
}

export class TaskHub {
  readonly store: TaskStore;
  readonly #runs = new Map<string, Run>();

  constructor(store: TaskStore) {
    this.store = store;
  }

  /** The running task with this id, if it runs here. */
  running(taskId: string): TaskRun | undefined {
    return this.#runs.get(taskId);
  }

  /** The task as it stands now: from its run when it runs here, else from the store. */
  async current(taskId: string): Promise<A2ATask | undefined> {
    const run = this.#runs.get(taskId);
    return run ? structuredClone(run.task) : this.store.load(taskId);
  }

  /** Starts a run of `task` (new, or continued by a message) and saves it as it is. */
  async begin(task: A2ATask, stop: AbortController): Promise<TaskRun> {
    const run: Run = {
      id: task.id,
      task: structuredClone(task),
      stop,
      finished: false,
      listeners: new Set(),
      saved: Promise.resolve(),
    };
    this.#runs.set(task.id, run);
    await this.#save(run);
    return run;
  }

  /** Follows a running task until its run ends; the returned function stops following. */
  follow(run: TaskRun, listener: TaskListener): () => void {
    const own = run as Run;
    own.listeners.add(listener);
    return () => own.listeners.delete(listener);
  }

  /** Applies an update that is not the last, saves it, and hands it to the followers. */
  async update(run: TaskRun, update: TaskUpdate): Promise<void> {
    const own = run as Run;
    if (own.finished) return;
    apply(own.task, update);
    await this.#save(own);
    await Promise.all([...own.listeners].map((listener) => listener(update)));
  }

  /**
   * Ends the run with its last status (`final: true`), unless it has ended already (a cancel came first); answers
   * whether this call ended it. `quiet` followers are not told (the stream that reports a failure its own way).
   */
  async finish(
    run: TaskRun,
    status: Omit<TaskStatus, "timestamp">,
    options: { metadata?: Record<string, unknown>; quiet?: TaskListener } = {},
  ): Promise<boolean> {
    const own = run as Run;
    if (own.finished) return false;
    own.finished = true;
    const update: TaskStatusUpdateEvent = {
      kind: "status-update",
      taskId: own.task.id,
      contextId: own.task.contextId,
      status: { ...status, timestamp: new Date().toISOString() },
      final: true,
      ...(options.metadata ? { metadata: options.metadata } : {}),
    };
    apply(own.task, update);
    this.#runs.delete(own.id);
    await this.#save(own);
    const listeners = [...own.listeners].filter((listener) => listener !== options.quiet);
    own.listeners.clear();
    await Promise.all(listeners.map((listener) => listener(update)));
    return true;
  }

  /** Stops every run (the server is closing); their tasks stay as last saved. */
  stopAll(): void {
    for (const run of this.#runs.values()) run.stop.abort();
  }

  /** Saves in order: each save waits for the one before. */
  #save(run: Run): Promise<void> {
    const snapshot = structuredClone(run.task);
    run.saved = run.saved.then(() => this.store.save(snapshot));
    return run.saved;
  }
}

/** Adds parts as a reply's pieces join (`partsBuilder`): text that follows text continues it. */
function appendParts(parts: Part[], added: Part[]): void {
  for (const part of added) {
    const last = parts.at(-1);
    if (last?.kind === "text" && part.kind === "text" && !last.metadata && !part.metadata) {
      (last as TextPart).text += (part as TextPart).text;
    } else parts.push(part);
  }
}

/** Changes the task as the update says: a new status (its message joins the history), or artifact parts. */
function apply(task: A2ATask, update: TaskUpdate): void {
  if (update.kind === "status-update") {
    task.status = update.status;
    if (update.status.message) task.history.push(update.status.message);
    return;
  }
  task.artifacts ??= [];
  const artifacts = task.artifacts;
  const existing = artifacts.find((a) => a.artifactId === update.artifact.artifactId);
  if (existing && update.append) appendParts(existing.parts, structuredClone(update.artifact.parts));
  else if (existing) Object.assign(existing, structuredClone(update.artifact));
  else artifacts.push(structuredClone(update.artifact));
}

/**
 * Where the A2A server keeps its tasks. The default holds them in memory (lost on restart, capped in number); an
 * agent that must answer `tasks/get` across restarts or replicas passes its own `TaskStore` to the server.
 */
import { type A2ATask, isTerminal, type TaskState } from "./a2a-protocol.ts";

export interface TaskFilter {
  contextId?: string;
  state?: TaskState;
}

/**
 * Tasks by id. `save` replaces the stored task with this one; `load` answers a copy the caller may change. Calls for
 * one task come one at a time, in order.
 */
export interface TaskStore {
  load(taskId: string): Promise<A2ATask | undefined>;
  save(task: A2ATask): Promise<void>;
  /** The tasks matching the filter, most recently updated first. */
  list(filter: TaskFilter): Promise<A2ATask[]>;
}

export interface InMemoryTaskStoreOptions {
  /** Most tasks kept; past it the longest-finished ones go first, then the least recently updated. Default 10 000. */
  maxTasks?: number;
}

export class InMemoryTaskStore implements TaskStore {
  readonly #tasks = new Map<string, A2ATask>();
  readonly #maxTasks: number;

  constructor(options: InMemoryTaskStoreOptions = {}) {
    this.#maxTasks = options.maxTasks ?? 10_000;
    if (!Number.isInteger(this.#maxTasks) || this.#maxTasks < 1) {
      throw new TypeError("maxTasks must be a positive integer");
    }
  }

  async load(taskId: string): Promise<A2ATask | undefined> {
    const task = this.#tasks.get(taskId);
    return task && structuredClone(task);
  }

  async save(task: A2ATask): Promise<void> {
    // Re-inserting keeps the map in update order: the first entries are the least recently updated.
    this.#tasks.delete(task.id);
    this.#tasks.set(task.id, structuredClone(task));
    if (this.#tasks.size > this.#maxTasks) this.#evict();
  }

  async list(filter: TaskFilter): Promise<A2ATask[]> {
    const matching: A2ATask[] = [];
    for (const task of this.#tasks.values()) {
      if (filter.contextId !== undefined && task.contextId !== filter.contextId) continue;
      if (filter.state !== undefined && task.status.state !== filter.state) continue;
      matching.push(structuredClone(task));
    }
    return matching.reverse();
  }

  get size(): number {
    return this.#tasks.size;
  }

  #evict(): void {
    for (const [id, task] of this.#tasks) {
      if (isTerminal(task.status.state)) {
        this.#tasks.delete(id);
        return;
      }
    }
    const oldest = this.#tasks.keys().next();
    if (!oldest.done) this.#tasks.delete(oldest.value);
  }
}

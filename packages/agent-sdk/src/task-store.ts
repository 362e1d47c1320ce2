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
  /**
   * Most bytes of task JSON kept, the same way (a caller sending large messages must not fill the process's memory).
   * The task just saved stays even when it alone is larger. Default 64 MiB.
   */
  maxBytes?: number;
}

export class InMemoryTaskStore implements TaskStore {
  readonly #tasks = new Map<string, { task: A2ATask; bytes: number }>();
  readonly #maxTasks: number;
  readonly #maxBytes: number;
  #bytes = 0;

  constructor(options: InMemoryTaskStoreOptions = {}) {
    this.#maxTasks = options.maxTasks ?? 10_000;
    this.#maxBytes = options.maxBytes ?? 64 * 1024 * 1024;
    for (const [name, value] of [
      ["maxTasks", this.#maxTasks],
      ["maxBytes", this.#maxBytes],
    ] as const) {
      if (!Number.isInteger(value) || value < 1) throw new TypeError(`${name} must be a positive integer`);
    }
  }

  async load(taskId: string): Promise<A2ATask | undefined> {
    const entry = this.#tasks.get(taskId);
    return entry && structuredClone(entry.task);
  }

  async save(task: A2ATask): Promise<void> {
    const text = JSON.stringify(task);
    this.#remove(task.id);
    // Re-inserting keeps the map in update order: the first entries are the least recently updated.
    this.#tasks.set(task.id, { task: JSON.parse(text) as A2ATask, bytes: text.length });
    this.#bytes += text.length;
    while (this.#tasks.size > 1 && (this.#tasks.size > this.#maxTasks || this.#bytes > this.#maxBytes)) {
      this.#evict();
    }
  }

  async list(filter: TaskFilter): Promise<A2ATask[]> {
    const matching: A2ATask[] = [];
    for (const { task } of this.#tasks.values()) {
      if (filter.contextId !== undefined && task.contextId !== filter.contextId) continue;
      if (filter.state !== undefined && task.status.state !== filter.state) continue;
      matching.push(structuredClone(task));
    }
    return matching.reverse();
  }

  get size(): number {
    return this.#tasks.size;
  }

  /** Bytes of task JSON held. */
  get bytes(): number {
    return this.#bytes;
  }

  #remove(taskId: string): void {
    const entry = this.#tasks.get(taskId);
    if (!entry) return;
    this.#tasks.delete(taskId);
    this.#bytes -= entry.bytes;
  }

  /** Drops the least recently updated finished task, else the least recently updated one. */
  #evict(): void {
    for (const [id, { task }] of this.#tasks) {
      if (isTerminal(task.status.state)) {
        this.#remove(id);
        return;
      }
    }
    const oldest = this.#tasks.keys().next();
    if (!oldest.done) this.#remove(oldest.value);
  }
}

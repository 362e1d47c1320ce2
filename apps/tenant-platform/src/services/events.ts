/**
 * The platform's event stream: service-kit's EventBus with the platform's event types, plus the credential watchers
 * that end a workspace-token stream when that workspace's tokens change. With `followChanges(feed)` those watchers
 * fire for a change committed by any replica (the workspace_tokens triggers), not only by this process.
 */
import type { ChangeFeed } from "@molecule/service-kit/cluster";
import {
  type BusEvent,
  type PublishInput as BusPublishInput,
  EventBus as ServiceEventBus,
} from "@molecule/service-kit/events";

export { DEFAULT_EVENT_BUFFER, type EventFilter, type Subscription } from "@molecule/service-kit/events";

export type PlatformEventType =
  | "workspace.status"
  | "workspace.heartbeat"
  | "workspace.heartbeat_missed"
  | "operation.step"
  | "operation.finished"
  | "a2a.delivery"
  | "a2a.wake_wait";

export type PlatformEvent = BusEvent<PlatformEventType>;

/** Where the platform's replicas share their events (packages/db migration 0008 makes the sequence). */
export const PLATFORM_EVENT_SHARING = { channel: "platform_events", sequence: "platform_event_ids" } as const;
export type PublishInput = BusPublishInput<PlatformEventType>;

export class EventBus extends ServiceEventBus<PlatformEventType> {
  private readonly credentialWatchers = new Map<string, Set<() => void>>();
  private readonly changeWatchers = new Set<(workspaceId: string) => void>();

  override close(): void {
    this.credentialWatchers.clear();
    this.changeWatchers.clear();
    super.close();
  }

  override publishMany(inputs: readonly PublishInput[]): void {
    super.publishMany(inputs);
    for (const input of inputs) {
      if (input.type === "workspace.status" && input.workspaceId) this.workspaceChanged(input.workspaceId);
    }
  }

  /**
   * Token and workspace changes committed by any replica reach the watchers here. After the feed reconnects (changes
   * may have been missed) every credential watcher fires: each stream checks its token again.
   */
  followChanges(feed: ChangeFeed): () => void {
    const stops = [
      feed.on("workspace_tokens", (workspaceId) => this.credentialsChanged(workspaceId)),
      feed.on("workspaces", (workspaceId) => this.workspaceChanged(workspaceId)),
      feed.onReset(() => {
        if (!feed.connected) return;
        for (const workspaceId of [...this.credentialWatchers.keys()]) this.credentialsChanged(workspaceId);
      }),
    ];
    return () => {
      for (const stop of stops) stop();
    };
  }

  /**
   * Calls `onChange` with the workspace's id whenever this process has committed a change to its status or its
   * bearer tokens (what memory of a workspace keyed by its token must forget). Not a subscription: it is neither
   * counted nor closed with the streams.
   */
  watchWorkspaceChanges(onChange: (workspaceId: string) => void): () => void {
    this.changeWatchers.add(onChange);
    return () => this.changeWatchers.delete(onChange);
  }

  private workspaceChanged(workspaceId: string): void {
    for (const onChange of this.changeWatchers) {
      try {
        onChange(workspaceId);
      } catch {
        // A broken watcher never breaks the write that changed the workspace.
      }
    }
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
    this.workspaceChanged(workspaceId);
    for (const onChange of [...(this.credentialWatchers.get(workspaceId) ?? [])]) {
      try {
        onChange();
      } catch {
        // A broken watcher never breaks the request that changed the tokens.
      }
    }
  }
}

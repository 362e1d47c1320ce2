/**
 * What the canvas knows: the workspaces (by id) and the recent events, kept current from the event stream.
 * Views subscribe and re-render what they show; a listener gets the events applied since it was last called.
 */

const MAX_EVENTS = 1000;
const MAX_REFETCH = 3;

export function createStore(api) {
  const workspaces = new Map();
  const events = [];
  const listeners = new Set();
  const refetching = new Set();
  let pending = [];
  let scheduled = false;
  let loaded = false;
  let loadError = null;
  /** Counts status events: a fetch that overlapped one may be older than it, so it is done again. */
  let statusEvents = 0;

  const changed = (event) => {
    if (event) pending.push(event);
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      const batch = pending;
      pending = [];
      for (const listener of listeners) listener(batch);
    });
  };

  const put = (workspace) => {
    workspaces.set(workspace.id, workspace);
    changed();
  };

  /** Fetches one workspace again (a new one, or one whose status moved), retrying when it raced an event. */
  const refetch = async (id) => {
    if (refetching.has(id)) return;
    refetching.add(id);
    try {
      for (let round = 0; round < MAX_REFETCH; round += 1) {
        const seen = statusEvents;
        const workspace = await api.getWorkspace(id);
        if (seen === statusEvents || round === MAX_REFETCH - 1) {
          put(workspace);
          return;
        }
      }
    } catch {
      // gone, or the platform is unreachable: the stream's next event or a refresh settles it
    } finally {
      refetching.delete(id);
    }
  };

  return {
    get loaded() {
      return loaded;
    },
    /** Why the last refresh failed, or null. */
    get loadError() {
      return loadError;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    /** Every workspace not removed, newest first. */
    fleet() {
      return [...workspaces.values()]
        .filter((workspace) => workspace.status !== "removed")
        .sort((a, b) => b.createdAt.localeCompare(a.createdAt));
    },
    get(id) {
      return workspaces.get(id);
    },
    put,
    /** The whole list again (at sign-in, and after a `reset`). */
    async refresh() {
      let list;
      try {
        for (let round = 0; round < MAX_REFETCH; round += 1) {
          const seen = statusEvents;
          list = await api.listWorkspaces();
          if (seen === statusEvents) break;
        }
      } catch (error) {
        loadError = error;
        changed();
        return;
      }
      loadError = null;
      const listed = new Set(list.map((workspace) => workspace.id));
      for (const [id, workspace] of workspaces) {
        // The list hides removed workspaces: one that is not listed any more was removed.
        if (!listed.has(id) && workspace.status !== "removed")
          workspaces.set(id, { ...workspace, status: "removed" });
      }
      for (const workspace of list) workspaces.set(workspace.id, workspace);
      loaded = true;
      changed();
    },
    refetch,
    /** Recent events, oldest first; only one workspace's when `workspaceId` is given. */
    events(workspaceId) {
      return workspaceId ? events.filter((event) => event.workspaceId === workspaceId) : events.slice();
    },
    apply(event) {
      if (events.length > 0 && event.id <= events[events.length - 1].id) {
        // Ids started again: the platform restarted, and what was kept belongs to its old process.
        events.length = 0;
      }
      events.push(event);
      if (events.length > MAX_EVENTS) events.shift();
      const id = event.workspaceId;
      const workspace = id ? workspaces.get(id) : undefined;
      if (event.type === "workspace.status") {
        statusEvents += 1;
        if (workspace) {
          workspaces.set(id, {
            ...workspace,
            status: event.data.to,
            statusReason: event.data.reason ?? null,
          });
        }
        // The view carries more than the event (the agent's URL, needsRestart): read it again.
        if (id && loaded) refetch(id);
      } else if (event.type === "workspace.heartbeat" && workspace) {
        workspaces.set(id, { ...workspace, lastHeartbeatAt: event.data.at ?? event.at });
      } else if (id && !workspace && loaded) {
        refetch(id);
      }
      changed(event);
    },
  };
}

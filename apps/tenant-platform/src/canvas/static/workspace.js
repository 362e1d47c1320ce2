import { ApiError } from "./api.js";
import { fill, h } from "./dom.js";
import { clockTime, dateTime, describeEvent, duration } from "./format.js";
import { errorBanner, heartbeatAge, isRemote, noticeBanner, remoteBadge, statusBadge } from "./parts.js";

const RECENT_EVENTS = 50;

const ACTIONS = {
  stop: {
    label: "Stop",
    confirm: "Stop workspace",
    explain: "The agent's process stops; its volume is kept and Start brings it back.",
  },
  start: { label: "Start", confirm: "Start workspace", explain: "The agent's process starts again." },
  // The same `start`, for a suspended workspace: it resumes where it was paused.
  wake: {
    label: "Wake",
    confirm: "Wake workspace",
    explain:
      "The suspended workspace resumes (its container unpaused, its machine resumed) and is online once its agent is back. The next A2A message to it would wake it too.",
    action: "start",
  },
  restart: {
    label: "Restart",
    confirm: "Restart workspace",
    explain: "The process is rebuilt from the current spec and secrets; the volume is kept.",
  },
  delete: {
    label: "Delete",
    confirm: "Delete workspace",
    explain: "The container or machine, its volume, tokens and secrets are removed. This cannot be undone.",
    danger: true,
  },
};

/** One workspace: its details, lifecycle actions (confirmed in a dialog), operations and recent events. */
export function mountWorkspace(main, { store, api, id }) {
  const head = h("div", { class: "page-head" });
  const details = h("dl", { class: "details" });
  const feedback = h("div", { class: "feedback" });
  const operations = h("div", { class: "operations", "aria-busy": "true" });
  const eventList = h("ol", { class: "events", role: "log", "aria-label": "Recent events" });
  const dialog = buildDialog();
  let unmounted = false;
  let operationsTimer;

  const buttons = Object.fromEntries(
    Object.entries(ACTIONS).map(([action, spec]) => [
      action,
      h(
        "button",
        {
          type: "button",
          class: `button${spec.danger ? " danger" : ""}`,
          onclick: () => confirmAction(action),
        },
        spec.label,
      ),
    ]),
  );
  const remoteNote = h(
    "p",
    { class: "hint", hidden: true },
    "The agent runs outside the platform: start, stop and restart it where it runs.",
  );
  const suspendedNote = h("div", {
    class: "banner info",
    role: "status",
    hidden: true,
    "data-testid": "suspended-note",
  });
  const actions = h(
    "div",
    { class: "actions", role: "group", "aria-label": "Workspace actions" },
    Object.values(buttons),
    remoteNote,
  );

  main.replaceChildren(
    h(
      "section",
      { class: "page" },
      h("a", { class: "back", href: "#/" }, "← Workspaces"),
      head,
      feedback,
      h("div", { class: "card" }, suspendedNote, details, actions),
      h(
        "div",
        { class: "columns" },
        h(
          "section",
          { class: "card", "aria-labelledby": "operations-title" },
          h("h2", { id: "operations-title" }, "Operations"),
          operations,
        ),
        h(
          "section",
          { class: "card", "aria-labelledby": "events-title" },
          h("h2", { id: "events-title" }, "Recent events"),
          eventList,
        ),
      ),
      dialog.element,
    ),
  );

  const show = (banner) => fill(feedback, banner);

  async function confirmAction(action) {
    const workspace = store.get(id);
    const spec = ACTIONS[action];
    const confirmed = await dialog.ask({
      title: `${spec.confirm} “${workspace?.name ?? id}”?`,
      body: spec.explain,
      confirm: spec.confirm,
      danger: spec.danger,
    });
    if (!confirmed || unmounted) return;
    try {
      const accepted = await api.lifecycle(id, spec.action ?? action, crypto.randomUUID());
      store.put(accepted.workspace);
      show(noticeBanner(`${spec.label} requested (operation ${accepted.operation.id}).`));
      loadOperations();
    } catch (error) {
      show(errorBanner(error, `${spec.label} failed`));
    }
  }

  async function loadOperations() {
    try {
      const list = await api.listOperations(id);
      if (unmounted) return;
      operations.setAttribute("aria-busy", "false");
      fill(
        operations,
        list.length === 0 ? h("p", { class: "muted" }, "No operations yet.") : list.map(renderOperation),
      );
    } catch (error) {
      if (!unmounted) fill(operations, errorBanner(error, "Could not load operations"));
    }
  }

  const renderHead = () => {
    const workspace = store.get(id);
    if (!workspace) return;
    fill(
      head,
      h(
        "h1",
        {},
        workspace.name,
        " ",
        isRemote(workspace) ? [remoteBadge(), " "] : null,
        statusBadge(workspace, { "data-testid": "workspace-status" }),
      ),
    );
    // An external workspace's process is not the platform's to start or stop; it can only be deleted here.
    const remote = isRemote(workspace);
    const suspended = workspace.status === "suspended";
    for (const action of ["stop", "start", "restart"]) buttons[action].hidden = remote;
    // A suspended workspace is woken (a start) rather than started: one button or the other.
    buttons.start.hidden = remote || suspended;
    buttons.wake.hidden = remote || !suspended;
    for (const button of Object.values(buttons)) button.disabled = workspace.status === "removed";
    remoteNote.hidden = !remote;
    suspendedNote.hidden = !suspended;
    if (suspended) {
      fill(
        suspendedNote,
        h("strong", {}, "Suspended"),
        workspace.statusReason ? ` (${workspace.statusReason})` : "",
        ": its agent is not running. The next A2A message wakes it, or wake it now.",
      );
    }
    const rows = [
      ["ID", h("code", {}, workspace.id)],
      ["Runtime", workspace.runtime],
      ["Backend", workspace.backend],
      ["Tier", String(workspace.tier)],
      [
        "Agent URL",
        workspace.url ? h("code", {}, workspace.url) : h("span", { class: "muted" }, "not registered"),
      ],
      ["Last heartbeat", heartbeatAge(workspace.lastHeartbeatAt)],
      ["Last activity", heartbeatAge(workspace.lastActivityAt)],
      ["Created", dateTime(workspace.createdAt)],
    ];
    if (!remote) rows.push(["Suspend when idle", idleSetting(workspace.idleSuspendSeconds)]);
    if (workspace.statusReason) rows.push(["Status reason", workspace.statusReason]);
    if (workspace.needsRestart) rows.push(["Needs restart", "yes: secrets changed since it started"]);
    fill(
      details,
      rows.map(([term, value]) => h("div", { class: "detail" }, h("dt", {}, term), h("dd", {}, value))),
    );
  };

  const renderEvents = () => {
    const recent = store.events(id).slice(-RECENT_EVENTS).reverse();
    fill(
      eventList,
      recent.length === 0
        ? h("li", { class: "muted" }, "No events yet.")
        : recent.map((event) =>
            h(
              "li",
              { dataset: { type: event.type } },
              h("time", { datetime: event.at }, clockTime(event.at)),
              h("span", { class: "event-type" }, event.type),
              h("span", { class: "event-text" }, describeEvent(event)),
            ),
          ),
    );
  };

  const update = (batch = []) => {
    renderHead();
    renderEvents();
    const touchesOperations = batch.some(
      (event) => event.workspaceId === id && event.type.startsWith("operation."),
    );
    if (touchesOperations) {
      clearTimeout(operationsTimer);
      operationsTimer = setTimeout(loadOperations, 250);
    }
  };

  (async () => {
    try {
      if (!store.get(id)) await store.refetch(id);
      if (!store.get(id)) store.put(await api.getWorkspace(id));
    } catch (error) {
      if (unmounted) return;
      const missing = error instanceof ApiError && error.status === 404;
      fill(head, h("h1", {}, missing ? "No such workspace" : "Workspace"));
      show(errorBanner(error, missing ? "Not found" : "Could not load the workspace"));
      actions.hidden = true;
      return;
    }
    update();
  })();
  loadOperations();
  update();

  return {
    update,
    unmount() {
      unmounted = true;
      clearTimeout(operationsTimer);
      dialog.cancel();
    },
  };
}

/** A workspace's idle_suspend_seconds as people read it. */
function idleSetting(seconds) {
  if (seconds === null || seconds === undefined) return "platform default (IDLE_SUSPEND_AFTER)";
  if (seconds === 0) return "never";
  return `after ${duration(seconds * 1000)} idle`;
}

function renderOperation(operation) {
  const end = operation.finishedAt ? Date.parse(operation.finishedAt) : undefined;
  const took = end === undefined ? "running" : duration(end - Date.parse(operation.createdAt));
  return h(
    "article",
    { class: "operation", dataset: { testid: "operation", operationId: operation.id } },
    h(
      "header",
      {},
      h("strong", {}, operation.kind),
      " ",
      h("span", { class: `op-status op-${operation.status}` }, operation.status),
      h(
        "span",
        { class: "muted" },
        ` · ${took} · ${operation.attempts} attempt${operation.attempts === 1 ? "" : "s"} · ${dateTime(operation.createdAt)}`,
      ),
    ),
    operation.error
      ? h("p", { class: "op-error", role: "note" }, `${operation.error.message} (${operation.error.code})`)
      : null,
    operation.steps.length === 0
      ? null
      : h(
          "table",
          { class: "steps", "aria-label": `Steps of ${operation.kind} ${operation.id}` },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              h("th", { scope: "col" }, "Step"),
              h("th", { scope: "col" }, "Duration"),
              h("th", { scope: "col" }, "Detail"),
            ),
          ),
          h(
            "tbody",
            {},
            operation.steps.map((step) =>
              h(
                "tr",
                {},
                h("td", {}, step.name),
                h("td", { class: "num" }, duration(step.durationMs)),
                h("td", {}, step.detail ?? ""),
              ),
            ),
          ),
        ),
  );
}

/** A modal confirmation (<dialog>): resolves true on confirm, false on cancel or Escape. */
function buildDialog() {
  const title = h("h2", { id: "confirm-title" });
  const body = h("p", { id: "confirm-body" });
  const confirm = h("button", { type: "button", class: "button primary", value: "confirm" });
  const cancel = h("button", { type: "button", class: "button", value: "cancel" }, "Cancel");
  const element = h(
    "dialog",
    { class: "confirm", "aria-labelledby": "confirm-title", "aria-describedby": "confirm-body" },
    title,
    body,
    h("div", { class: "dialog-actions" }, cancel, confirm),
  );
  let settle;
  const close = (answer) => {
    if (element.open) element.close();
    settle?.(answer);
    settle = undefined;
  };
  confirm.addEventListener("click", () => close(true));
  cancel.addEventListener("click", () => close(false));
  element.addEventListener("cancel", () => close(false));
  element.addEventListener("close", () => close(false));
  return {
    element,
    ask(spec) {
      title.textContent = spec.title;
      body.textContent = spec.body;
      confirm.textContent = spec.confirm;
      confirm.className = `button ${spec.danger ? "danger" : "primary"}`;
      return new Promise((resolve) => {
        settle = resolve;
        element.showModal();
        cancel.focus();
      });
    },
    cancel: () => close(false),
  };
}

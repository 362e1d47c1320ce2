import { fill, h } from "./dom.js";
import { errorBanner, heartbeatAge, isRemote, remoteBadge, statusBadge } from "./parts.js";

/** The fleet: every workspace in one table, kept current by the store. */
export function mountFleet(main, { store }) {
  const body = h("tbody");
  const feedback = h("div", { class: "feedback" });
  const count = h("span", { class: "count", "aria-live": "polite" });
  const empty = h(
    "p",
    { class: "empty", hidden: true },
    "No workspaces yet. ",
    h("a", { href: "#/new" }, "Create the first one"),
    ".",
  );
  const table = h(
    "table",
    { class: "fleet", "aria-labelledby": "fleet-title" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Name", "Runtime", "Backend", "Tier", "Status", "Last heartbeat"].map((title) =>
          h("th", { scope: "col" }, title),
        ),
      ),
    ),
    body,
  );
  main.replaceChildren(
    h(
      "section",
      { class: "page" },
      h(
        "div",
        { class: "page-head" },
        h("h1", { id: "fleet-title" }, "Workspaces ", count),
        h("a", { class: "button primary", href: "#/new" }, "New workspace"),
      ),
      feedback,
      h("div", { class: "card table-card" }, table, empty),
    ),
  );

  const update = () => {
    const fleet = store.fleet();
    fill(feedback, store.loadError ? errorBanner(store.loadError, "Could not load the workspaces") : null);
    count.textContent = store.loaded ? String(fleet.length) : "";
    empty.hidden = !store.loaded || fleet.length > 0;
    table.hidden = fleet.length === 0;
    fill(
      body,
      fleet.map((workspace) =>
        h(
          "tr",
          { dataset: { testid: "workspace-row", workspaceId: workspace.id } },
          h(
            "th",
            { scope: "row" },
            h("a", { href: `#/workspaces/${workspace.id}` }, workspace.name),
            isRemote(workspace) ? [" ", remoteBadge()] : null,
            h("div", { class: "id muted" }, workspace.id),
          ),
          h("td", {}, workspace.runtime),
          h("td", {}, workspace.backend),
          h("td", {}, String(workspace.tier)),
          h("td", {}, statusBadge(workspace, { "data-testid": "workspace-status" })),
          h("td", {}, heartbeatAge(workspace.lastHeartbeatAt)),
        ),
      ),
    );
  };
  update();
  return { update, unmount() {} };
}

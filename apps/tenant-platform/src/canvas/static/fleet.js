import { fill, h } from "./dom.js";
import { clockTime } from "./format.js";
import { errorBanner, heartbeatAge, isRemote, remoteBadge, statusBadge } from "./parts.js";

/** How often the warm pools card is read again while the fleet is shown (pools publish no events of their own). */
const POOLS_REFRESH_MS = 5_000;

/** Why the pool's last member start failed, and when it is tried again; empty when nothing failed. */
function lastError(pool) {
  if (!pool.last_error) return "";
  const { code, message } = pool.last_error;
  const retry = pool.next_attempt_at ? ` (retried at ${clockTime(pool.next_attempt_at)})` : "";
  return `${code}: ${message}${retry}`;
}

/** The warm pools, one row each (`GET /pools`), below the fleet; hidden while there is none. */
function poolsCard(api) {
  const body = h("tbody");
  const card = h(
    "section",
    {
      class: "card table-card",
      hidden: true,
      "aria-labelledby": "pools-title",
      dataset: { testid: "pools" },
    },
    h("h2", { id: "pools-title" }, "Warm pools"),
    h(
      "table",
      { class: "fleet" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Runtime", "Tier", "Size", "Ready", "Starting", "Claimed", "Last error"].map((title) =>
            h("th", { scope: "col" }, title),
          ),
        ),
      ),
      body,
    ),
  );
  const refresh = async () => {
    let pools;
    try {
      pools = await api.listPools();
    } catch {
      return; // the fleet's own banner reports an unreachable platform
    }
    card.hidden = pools.length === 0;
    fill(
      body,
      pools.map((pool) =>
        h(
          "tr",
          { dataset: { testid: "pool-row", runtime: pool.runtime, tier: String(pool.tier) } },
          h("th", { scope: "row" }, pool.runtime),
          h("td", {}, String(pool.tier)),
          h("td", { dataset: { testid: "pool-size" } }, String(pool.size)),
          h("td", { dataset: { testid: "pool-ready" } }, String(pool.ready)),
          h("td", {}, String(pool.starting)),
          h("td", {}, String(pool.claimed)),
          h("td", { class: "muted", dataset: { testid: "pool-error" } }, lastError(pool)),
        ),
      ),
    );
  };
  void refresh();
  const timer = setInterval(refresh, POOLS_REFRESH_MS);
  return { card, refresh, stop: () => clearInterval(timer) };
}

/** The fleet: every workspace in one table, kept current by the store; the warm pools below it. */
export function mountFleet(main, { store, api }) {
  const pools = poolsCard(api);
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
      pools.card,
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
  return { update, unmount: () => pools.stop() };
}

import { describeError } from "./api.js";
import { h } from "./dom.js";
import { age } from "./format.js";

/** The runtime name of workspaces whose agent runs outside the platform. */
export const EXTERNAL_RUNTIME = "external";

export function isRemote(workspace) {
  return workspace.runtime === EXTERNAL_RUNTIME;
}

export function statusBadge(workspace, attributes = {}) {
  const label = workspace.status.replace("_", " ");
  return h(
    "span",
    {
      class: `status status-${workspace.status}`,
      title: workspace.statusReason ?? undefined,
      dataset: { status: workspace.status },
      ...attributes,
    },
    label,
  );
}

export function remoteBadge() {
  return h(
    "span",
    { class: "badge remote", title: "The agent runs outside the platform and connects to it" },
    "REMOTE",
  );
}

/** "12 s ago", kept ticking by tickAges(). */
export function heartbeatAge(iso) {
  if (!iso) return h("span", { class: "muted" }, "never");
  return h(
    "time",
    { datetime: iso, dataset: { since: iso }, title: new Date(iso).toLocaleString() },
    age(iso),
  );
}

export function tickAges(root = document) {
  const now = Date.now();
  for (const element of root.querySelectorAll("time[data-since]")) {
    element.textContent = age(element.dataset.since, now);
  }
}

/** An error banner for a failed API call: the platform's message, its code and request id. */
export function errorBanner(error, title = "The platform refused that") {
  return h(
    "div",
    { class: "banner error", role: "alert" },
    h("strong", {}, `${title}: `),
    describeError(error),
  );
}

export function noticeBanner(text) {
  return h("div", { class: "banner ok", role: "status" }, text);
}

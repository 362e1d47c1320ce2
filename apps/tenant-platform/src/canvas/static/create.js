import { fill, h } from "./dom.js";
import { errorBanner, remoteBadge } from "./parts.js";

const TIERS = [
  { value: 2, label: "2: 512 MiB, 1 CPU" },
  { value: 3, label: "3: 2 GiB, 2 CPUs" },
  { value: 4, label: "4: 4 GiB, 4 CPUs" },
];

const FIELD_LABELS = {
  workspace_id: "Workspace ID",
  platform_url: "Platform URL",
  registration_token: "Registration token (one-time)",
  registration_token_status: "Token status",
  register_url: "Register URL",
  heartbeat_url: "Heartbeat URL",
  secrets_url: "Secrets URL",
  heartbeat_interval_seconds: "Heartbeat at least every (s)",
  agent_url: "Agent URL",
};

/** The API's ceiling for idle_suspend_seconds (30 days); the field's own constraints mirror the API's. */
const MAX_IDLE_SUSPEND_SECONDS = 30 * 24 * 3600;

const SNIPPET_LABELS = { curl: "curl", python: "Python", typescript: "TypeScript", cli: "CLI" };

/** The create form; an external workspace's connection details are shown once, here, after it is made. */
export function mountCreate(main, { store, api, navigate }) {
  const feedback = h("div", { class: "feedback" });
  const name = h("input", {
    id: "ws-name",
    name: "name",
    required: true,
    maxlength: 100,
    autocomplete: "off",
  });
  const external = h("input", { id: "ws-external", name: "external", type: "checkbox" });
  const runtime = h("input", {
    id: "ws-runtime",
    name: "runtime",
    value: "echo",
    required: true,
    pattern: "[a-z0-9][a-z0-9._\\-]{0,62}",
    autocomplete: "off",
    "aria-describedby": "ws-runtime-help",
  });
  const url = h("input", {
    id: "ws-url",
    name: "url",
    type: "url",
    placeholder: "https://agent.example.com",
    autocomplete: "off",
    "aria-describedby": "ws-url-help",
  });
  const tier = h(
    "select",
    { id: "ws-tier", name: "tier" },
    TIERS.map((option) => h("option", { value: String(option.value) }, option.label)),
  );
  // A whole number of seconds from 0 (never) to 30 days, as the API takes it; empty leaves it to the platform's
  // IDLE_SUSPEND_AFTER. The browser refuses anything else before a request is made.
  const idle = h("input", {
    id: "ws-idle",
    name: "idle_suspend_seconds",
    type: "number",
    min: 0,
    max: MAX_IDLE_SUSPEND_SECONDS,
    step: 1,
    inputmode: "numeric",
    placeholder: "platform default",
    autocomplete: "off",
    "aria-describedby": "ws-idle-help",
  });
  const idleField = h(
    "div",
    { class: "field" },
    h("label", { for: "ws-idle" }, "Suspend when idle (seconds)"),
    idle,
    h(
      "p",
      { class: "hint", id: "ws-idle-help" },
      "After this long with no A2A message and no activity reported, the workspace is suspended; the next message " +
        "wakes it. 0: never. Empty: the platform's IDLE_SUSPEND_AFTER. At most 30 days.",
    ),
  );
  const submit = h("button", { type: "submit", class: "button primary" }, "Create workspace");
  const runtimeField = h(
    "div",
    { class: "field" },
    h("label", { for: "ws-runtime" }, "Runtime"),
    runtime,
    h(
      "p",
      { class: "hint", id: "ws-runtime-help" },
      "The image molecule/workspace-<runtime> runs the agent.",
    ),
  );
  const urlField = h(
    "div",
    { class: "field", hidden: true },
    h("label", { for: "ws-url" }, "Agent URL (optional)"),
    url,
    h(
      "p",
      { class: "hint", id: "ws-url-help" },
      "Where the agent will listen; it may also send its own when it registers.",
    ),
  );
  let idempotencyKey = crypto.randomUUID();

  const syncExternal = () => {
    runtimeField.hidden = external.checked;
    runtime.disabled = external.checked;
    urlField.hidden = !external.checked;
    url.disabled = !external.checked;
    // An external agent runs elsewhere: the platform never suspends it.
    idleField.hidden = external.checked;
    idle.disabled = external.checked;
  };
  external.addEventListener("change", syncExternal);
  // A changed form is a different request: it gets a new idempotency key.
  const renewKey = () => {
    idempotencyKey = crypto.randomUUID();
  };

  const form = h(
    "form",
    {
      class: "card create",
      "aria-labelledby": "create-title",
      oninput: renewKey,
      onsubmit: async (event) => {
        event.preventDefault();
        const body = { name: name.value.trim(), tier: Number(tier.value) };
        if (external.checked) {
          body.external = true;
          if (url.value.trim()) body.url = url.value.trim();
        } else {
          body.runtime = runtime.value.trim();
          if (idle.value !== "") body.idle_suspend_seconds = idle.valueAsNumber;
        }
        submit.disabled = true;
        fill(feedback);
        try {
          const created = await api.createWorkspace(body, idempotencyKey);
          store.put(created.workspace);
          renewKey();
          if (created.connection) showConnection(section, created);
          else navigate(`#/workspaces/${created.workspace.id}`);
        } catch (error) {
          fill(feedback, errorBanner(error, "Could not create the workspace"));
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("div", { class: "field" }, h("label", { for: "ws-name" }, "Name"), name),
    h(
      "div",
      { class: "field checkbox" },
      external,
      h(
        "label",
        { for: "ws-external" },
        "External: the agent runs elsewhere (a laptop, a CI runner, on-prem)",
      ),
    ),
    runtimeField,
    urlField,
    h("div", { class: "field" }, h("label", { for: "ws-tier" }, "Tier"), tier),
    idleField,
    submit,
  );
  const section = h(
    "section",
    { class: "page narrow" },
    h("a", { class: "back", href: "#/" }, "← Workspaces"),
    h("div", { class: "page-head" }, h("h1", { id: "create-title" }, "New workspace")),
    feedback,
    form,
  );
  main.replaceChildren(section);
  syncExternal();
  name.focus();
  return { update() {}, unmount() {} };
}

/** Shows an external workspace's connection bundle; it lives only in this page and is never fetched again. */
function showConnection(section, created) {
  const { workspace, connection } = created;
  const scalars = Object.entries(connection).filter(
    ([, value]) => value === null || ["string", "number", "boolean"].includes(typeof value),
  );
  const snippets = connection.snippets && typeof connection.snippets === "object" ? connection.snippets : {};
  const panel = h(
    "section",
    { class: "card connection", "aria-labelledby": "connection-title", "data-testid": "connection" },
    h("h2", { id: "connection-title" }, "Connect the agent for ", workspace.name, " ", remoteBadge()),
    h(
      "div",
      { class: "banner warning", role: "alert" },
      h("strong", {}, "Copy these now: "),
      "the registration token and the snippets that contain it are shown only this once and will not be shown again.",
    ),
    h(
      "dl",
      { class: "details" },
      scalars.map(([key, value]) =>
        h(
          "div",
          { class: "detail" },
          h("dt", {}, FIELD_LABELS[key] ?? key.replaceAll("_", " ")),
          h("dd", {}, value === null ? h("span", { class: "muted" }, "–") : h("code", {}, String(value))),
        ),
      ),
    ),
    Object.entries(snippets).map(([key, text]) => snippetBlock(SNIPPET_LABELS[key] ?? key, String(text))),
    Object.keys(snippets).length === 0
      ? h("p", { class: "muted" }, "No snippets were given (the registration token was already used).")
      : null,
    h(
      "div",
      { class: "actions" },
      h("a", { class: "button primary", href: `#/workspaces/${workspace.id}` }, "Go to the workspace"),
      h("a", { class: "button", href: "#/" }, "Done"),
    ),
  );
  section.className = "page";
  section.replaceChildren(h("a", { class: "back", href: "#/" }, "← Workspaces"), panel);
}

function snippetBlock(label, text) {
  const code = h("code", {}, text);
  const pre = h("pre", { tabindex: "0", "aria-label": `${label} snippet` }, code);
  const status = h("span", { class: "copy-status", role: "status" });
  const button = h(
    "button",
    {
      type: "button",
      class: "button small",
      "aria-label": `Copy the ${label} snippet`,
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(text);
          status.textContent = "Copied";
        } catch {
          const range = document.createRange();
          range.selectNodeContents(code);
          const selection = getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          status.textContent = "Selected: press Ctrl+C to copy";
        }
      },
    },
    "Copy",
  );
  return h(
    "div",
    { class: "snippet", dataset: { testid: "snippet", snippet: label } },
    h("div", { class: "snippet-head" }, h("h3", {}, label), status, button),
    pre,
  );
}

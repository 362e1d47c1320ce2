import { createApi } from "./api.js";
import { mountCreate } from "./create.js";
import { mountFleet } from "./fleet.js";
import { renderLogin } from "./login.js";
import { tickAges } from "./parts.js";
import { createStore } from "./store.js";
import { openEventStream } from "./stream.js";
import { mountWorkspace } from "./workspace.js";

const TOKEN_KEY = "molecule.adminToken";
const STREAM_STATES = { live: "Live", reconnecting: "Reconnecting…", closed: "Disconnected" };

const main = document.getElementById("main");
const nav = document.querySelector(".topnav");
const session = document.querySelector(".session");
const streamState = document.querySelector(".stream-state");

let current = null;

/** One signed-in session: the API client, the store, the event stream and the views over them. */
function startSession(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  const api = createApi(token, {
    onUnauthorized: () => signOut("The admin token is no longer accepted; sign in again."),
  });
  const store = createStore(api);
  nav.hidden = false;
  session.hidden = false;

  let view = null;
  const route = () => {
    view?.unmount();
    const hash = location.hash || "#/";
    const workspace = /^#\/workspaces\/([A-Za-z0-9_]+)$/.exec(hash);
    const context = {
      store,
      api,
      navigate: (to) => {
        location.hash = to;
      },
    };
    if (workspace) view = mountWorkspace(main, { ...context, id: workspace[1] });
    else if (hash === "#/new") view = mountCreate(main, context);
    else view = mountFleet(main, context);
    // The clicked link is gone with the old view: move focus to the new one, for keyboard and screen readers.
    if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
    for (const link of nav.querySelectorAll("a")) {
      if (link.getAttribute("href") === hash) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  };
  const unsubscribe = store.subscribe((batch) => view?.update(batch));

  const stream = openEventStream({
    path: "/events",
    token,
    // From the oldest event the platform still keeps, so a workspace page shows its recent history too.
    lastEventId: 0,
    onEvent: (event) => store.apply(event),
    onReset: () => store.refresh(),
    onState: (state) => {
      streamState.textContent = STREAM_STATES[state] ?? state;
      streamState.dataset.state = state;
    },
    onUnauthorized: () => signOut("The admin token is no longer accepted; sign in again."),
  });
  const ticker = setInterval(() => tickAges(main), 1000);
  window.addEventListener("hashchange", route);
  route();
  store.refresh();

  current = {
    end() {
      stream.close();
      clearInterval(ticker);
      window.removeEventListener("hashchange", route);
      unsubscribe();
      view?.unmount();
    },
  };
}

function signOut(notice) {
  current?.end();
  current = null;
  sessionStorage.removeItem(TOKEN_KEY);
  nav.hidden = true;
  session.hidden = true;
  renderLogin(main, { notice, onSignedIn: startSession });
}

document.querySelector('[data-action="sign-out"]').addEventListener("click", () => signOut());

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) startSession(saved);
else signOut();

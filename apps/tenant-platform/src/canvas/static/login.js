import { ApiError, createApi, describeError } from "./api.js";
import { h } from "./dom.js";

/** The sign-in form: the admin token is checked against the API before it is kept (in sessionStorage). */
export function renderLogin(main, { notice, onSignedIn }) {
  const input = h("input", {
    id: "admin-token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "admin-token-help",
  });
  const message = h("p", { class: "form-error", role: "alert", id: "login-error" });
  const submit = h("button", { type: "submit", class: "button primary" }, "Sign in");
  if (notice) message.textContent = notice;

  const form = h(
    "form",
    {
      class: "card login",
      "aria-labelledby": "login-title",
      onsubmit: async (event) => {
        event.preventDefault();
        const token = input.value.trim();
        if (!token) return;
        submit.disabled = true;
        message.textContent = "";
        try {
          await createApi(token).listWorkspaces();
          onSignedIn(token);
        } catch (error) {
          message.textContent = loginFailure(error);
          input.select();
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h1", { id: "login-title" }, "Sign in"),
    h(
      "p",
      { class: "muted", id: "admin-token-help" },
      "Use the platform's admin token (ADMIN_TOKEN, or the one the platform printed when it first started). " +
        "It stays in this browser tab only.",
    ),
    h("label", { for: "admin-token" }, "Admin token"),
    input,
    message,
    submit,
  );
  main.replaceChildren(h("section", { class: "login-wrap" }, form));
  input.focus();
}

function loginFailure(error) {
  if (error instanceof ApiError && error.status === 401) {
    return "That token was not accepted: it is not this platform's admin token.";
  }
  if (error instanceof ApiError && error.status === 403) {
    return "That is a workspace token; the canvas needs the admin token.";
  }
  return `Could not sign in: ${describeError(error)}`;
}

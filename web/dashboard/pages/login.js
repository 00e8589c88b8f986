// Sign in with an API key, or with the one-time link that `papayya server` prints
// (/login#token=…: the token is in the fragment, which never reaches a server log).
import { ApiError, api, saveSession, session } from "../lib/api.js";
import { add, errorBox, field, h, prose } from "../lib/dom.js";

async function exchange(ctx, token, status) {
  status.replaceChildren(h("p", { class: "muted" }, "Signing in with the login link…"));
  try {
    const made = await api("/v1/dashboard/login", { method: "POST", body: { token }, auth: false });
    saveSession(
      { key: made.api_key, keyId: made.key_id, projectId: made.project_id, projectName: made.project_name },
      true,
    );
    ctx.navigate(ctx.next, { replace: true });
  } catch (error) {
    status.replaceChildren(errorBox(error instanceof ApiError ? error : new Error("The login link did not work.")));
  }
}

export default async function login(ctx) {
  ctx.title("Sign in");
  const status = h("div", { class: "login-status", "aria-live": "polite" });
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) {
    history.replaceState(null, "", location.pathname + location.search); // drop the token from the address
  }
  if (!token && session()) {
    ctx.navigate(ctx.next, { replace: true });
    return;
  }

  const key = h("input", {
    type: "password",
    name: "api_key",
    autocomplete: "current-password",
    required: true,
    spellcheck: "false",
    placeholder: "cpk_…",
  });
  const remember = h("input", { type: "checkbox", name: "remember", id: "remember" });
  const submit = h("button", { type: "submit", class: "button primary" }, "Sign in");
  const form = h(
    "form",
    { class: "login-form", novalidate: true },
    field("API key", key, "Created with your project, or by `papayya keys create`. It stays in this browser."),
    h("div", { class: "check" }, remember, h("label", { for: "remember" }, "Keep me signed in on this device")),
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = key.value.trim();
    if (!value) {
      status.replaceChildren(errorBox(new Error("Enter an API key.")));
      key.focus();
      return;
    }
    submit.disabled = true;
    status.replaceChildren(h("p", { class: "muted" }, "Checking the key…"));
    try {
      const projects = await api("/v1/projects", { key: value });
      saveSession({ key: value, projectName: projects[0]?.name || null, projectId: projects[0]?.id || null }, remember.checked);
      ctx.navigate(ctx.next, { replace: true });
    } catch (error) {
      const message = error instanceof ApiError && error.status === 401 ? "That API key is not valid." : error.message;
      status.replaceChildren(errorBox(new Error(message)));
      key.focus();
    } finally {
      submit.disabled = false;
    }
  });

  add(ctx.main, 
    h(
      "div",
      { class: "login" },
      h("h1", null, "Sign in to Papayya"),
      h("p", { class: "muted" }, prose("Use an API key of your project, or open the login link that `papayya server` prints.")),
      form,
      status,
    ),
  );
  if (token) await exchange(ctx, token, status);
  else key.focus();
}

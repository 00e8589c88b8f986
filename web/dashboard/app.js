// The dashboard's shell: sign-in state, navigation between pages without reloads, and the
// life cycle of a page (its requests, streams and timers stop when the user leaves it).
import { api, forgetAgents, forgetSession, session, whenUnauthorized } from "./lib/api.js";
import { clear, errorBox, h } from "./lib/dom.js";
import agentPage from "./pages/agent.js";
import agentsPage from "./pages/agents.js";
import costPage from "./pages/cost.js";
import loginPage from "./pages/login.js";
import overviewPage from "./pages/overview.js";
import runPage from "./pages/run.js";
import runsPage from "./pages/runs.js";
import schedulesPage from "./pages/schedules.js";
import webhooksPage from "./pages/webhooks.js";

const ROUTES = [
  [/^\/$/, overviewPage, "overview"],
  [/^\/login$/, loginPage, null],
  [/^\/runs$/, runsPage, "runs"],
  [/^\/runs\/([^/]+)$/, runPage, "runs"],
  [/^\/cost$/, costPage, "cost"],
  [/^\/agents$/, agentsPage, "agents"],
  [/^\/agents\/([^/]+)$/, agentPage, "agents"],
  [/^\/schedules$/, schedulesPage, "schedules"],
  [/^\/webhooks$/, webhooksPage, "webhooks"],
];

const main = document.getElementById("main");
let current = null;
let toastTimer = null;

export function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("shown"), 4000);
}

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  render({ focus: true });
}

function safeNext(value) {
  return value && value.startsWith("/") && !value.startsWith("//") ? value : "/";
}

async function showAccount(signal) {
  const nav = document.getElementById("nav");
  const account = document.getElementById("account");
  const signedIn = session();
  nav.hidden = !signedIn;
  account.hidden = !signedIn;
  if (!signedIn) return;
  const name = document.getElementById("project-name");
  if (signedIn.projectName) {
    name.textContent = signedIn.projectName;
    return;
  }
  try {
    const projects = await api("/v1/projects", { signal });
    name.textContent = projects[0]?.name || "";
  } catch {
    name.textContent = "";
  }
}

function markNav(section) {
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.nav === section) {
      a.setAttribute("aria-current", "page");
      a.scrollIntoView({ block: "nearest", inline: "nearest" }); // a phone's nav scrolls sideways
    } else a.removeAttribute("aria-current");
  }
}

async function render({ focus = false } = {}) {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const path = location.pathname;
  if (!session() && path !== "/login") {
    history.replaceState(null, "", "/login?next=" + encodeURIComponent(path + location.search));
    return render({ focus });
  }
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  showAccount(controller.signal);
  clear(main);
  if (!found) {
    markNav(null);
    document.title = "Not found · Papayya";
    main.append(h("h1", null, "Not found"), h("p", null, "There is no page here. ", h("a", { href: "/" }, "Go to the overview.")));
    return;
  }
  const [pattern, page, section] = found;
  markNav(section);
  const params = path.match(pattern).slice(1).map(decodeURIComponent);
  const ctx = {
    main,
    params,
    query: new URLSearchParams(location.search),
    signal: controller.signal,
    navigate,
    toast,
    next: safeNext(new URLSearchParams(location.search).get("next")),
    /** Run fn every ms until the page is left (not while the tab is hidden). */
    every(fn, ms) {
      const timer = setInterval(() => {
        if (!document.hidden) fn();
      }, ms);
      controller.signal.addEventListener("abort", () => clearInterval(timer));
    },
    title(text) {
      document.title = `${text} · Papayya`;
    },
  };
  try {
    await page(ctx);
  } catch (error) {
    if (controller.signal.aborted || error?.name === "AbortError") return;
    if (error?.status === 401) return; // signed out; the login page is on its way
    main.append(errorBox(error));
  }
  if (focus && !controller.signal.aborted) main.focus({ preventScroll: false });
}

async function signOut() {
  const signedIn = session();
  // A key made by a login link belongs to this browser alone: revoke it on the way out.
  if (signedIn?.keyId && signedIn?.projectId) {
    try {
      await api(`/v1/projects/${encodeURIComponent(signedIn.projectId)}/api-keys/${encodeURIComponent(signedIn.keyId)}`, { method: "DELETE" });
    } catch {
      // already revoked or unreachable: forgetting it here is what matters
    }
  }
  forgetSession();
  forgetAgents();
  navigate("/login");
}

whenUnauthorized(() => {
  forgetSession();
  forgetAgents();
  if (location.pathname !== "/login") {
    history.replaceState(null, "", "/login?next=" + encodeURIComponent(location.pathname + location.search));
    render();
    toast("Your API key is no longer valid. Sign in again.");
  }
});

document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const a = event.target.closest("a[href]");
  if (!a || a.target || a.hasAttribute("download")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/v1/") || url.pathname.startsWith("/assets/")) return;
  if (url.pathname === location.pathname && url.search === location.search && url.hash) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
});

window.addEventListener("popstate", () => render({ focus: true }));
document.getElementById("sign-out").addEventListener("click", signOut);
render();

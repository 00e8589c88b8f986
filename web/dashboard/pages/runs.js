// Runs, newest first, filtered by agent, status and time (the filters live in the address, so
// a filtered view can be shared), kept live by the project's run events.
import { agents, follow, page as listPage } from "../lib/api.js";
import { add, badge, clear, field, h, select, table } from "../lib/dom.js";
import { STATUSES, duration, runDuration, tokens, usd, when } from "../lib/format.js";

const SINCE = [
  ["", "Any time"],
  ["15", "Last 15 minutes"],
  ["60", "Last hour"],
  ["1440", "Last 24 hours"],
  ["10080", "Last 7 days"],
  ["43200", "Last 30 days"],
];
const PAGE = 50;

export function runsTable(runs, known, caption, empty = "No runs match these filters.") {
  return table(
    [
      { label: "Run", cell: (r) => h("a", { href: `/runs/${encodeURIComponent(r.id)}` }, r.id) },
      {
        label: "Agent",
        cell: (r) => h("a", { href: `/agents/${encodeURIComponent(r.agent_id)}` }, known.byId.get(r.agent_id)?.name || r.agent_id),
      },
      { label: "Status", cell: (r) => badge(r.status) },
      { label: "Trigger", cell: (r) => (r.replayed_from ? `replay (step ${r.replay_from_step})` : r.trigger) },
      { label: "Steps", class: "num", cell: (r) => String(r.current_step) },
      { label: "Cost", class: "num", cell: (r) => h("span", { title: `$${r.cost_usd}` }, usd(r.cost_usd)) },
      { label: "Tokens", class: "num", cell: (r) => tokens(r.total_input_tokens, r.total_output_tokens) },
      { label: "Duration", class: "num", cell: (r) => duration(runDuration(r)) },
      { label: "Created", cell: (r) => when(r.created_at) },
    ],
    runs,
    { caption, empty, rowProps: (r) => ({ dataset: { run: r.id, status: r.status } }) },
  );
}

export default async function runs(ctx) {
  ctx.title("Runs");
  const known = await agents(ctx.signal, { fresh: true });
  const filters = {
    agent: ctx.query.get("agent") || "",
    status: STATUSES.includes(ctx.query.get("status")) ? ctx.query.get("status") : "",
    since: SINCE.some(([v]) => v === ctx.query.get("since")) ? ctx.query.get("since") : "",
  };
  const agentSelect = select({ name: "agent" }, [["", "All agents"], ...known.list.map((a) => [a.id, a.name])], filters.agent);
  const statusSelect = select({ name: "status" }, [["", "All statuses"], ...STATUSES.map((s) => [s, s.replace(/_/g, " ")])], filters.status);
  const sinceSelect = select({ name: "since" }, SINCE, filters.since);
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter runs" }, field("Agent", agentSelect), field("Status", statusSelect), field("Created", sinceSelect));
  const apply = () => {
    const query = new URLSearchParams();
    if (agentSelect.value) query.set("agent", agentSelect.value);
    if (statusSelect.value) query.set("status", statusSelect.value);
    if (sinceSelect.value) query.set("since", sinceSelect.value);
    const text = query.toString();
    ctx.navigate("/runs" + (text ? "?" + text : ""), { replace: true });
  };
  for (const control of [agentSelect, statusSelect, sinceSelect]) control.addEventListener("change", apply);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });

  const live = h("span", { class: "live", "aria-live": "polite" }, "connecting…");
  const list = h("div", { id: "runs-list" });
  const more = h("button", { type: "button", class: "button", hidden: true }, "Load more");
  add(ctx.main, h("div", { class: "page-head" }, h("h1", null, "Runs"), live), form, list, h("div", { class: "more" }, more));

  let shown = PAGE;
  const params = { agent_id: filters.agent || null, status: filters.status || null };
  const since = filters.since ? Date.now() - Number(filters.since) * 60000 : null;

  async function load() {
    let runs;
    if (since === null) {
      const page = await listPage("/v1/runs", { params: { ...params, limit: Math.min(shown, 200) }, signal: ctx.signal });
      runs = page.data;
      more.hidden = !page.next_cursor || shown >= 200;
    } else {
      // Newest first: read pages until runs are older than the window.
      runs = [];
      let cursor = null;
      do {
        const page = await listPage("/v1/runs", { params: { ...params, limit: 200, cursor }, signal: ctx.signal });
        runs.push(...page.data.filter((r) => Date.parse(r.created_at) >= since));
        const last = page.data[page.data.length - 1];
        cursor = last && Date.parse(last.created_at) >= since ? page.next_cursor : null;
      } while (cursor && runs.length < shown);
      more.hidden = runs.length <= shown;
      runs = runs.slice(0, shown);
    }
    clear(list, runsTable(runs, known, "Runs"));
  }
  more.addEventListener("click", () => {
    shown += PAGE;
    load();
  });

  await load();

  // Live: any event of a run of this project refreshes the list (the list is a read model a
  // moment behind the events, so refresh again shortly after).
  let timer = null;
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      load().catch(() => {});
      setTimeout(() => load().catch(() => {}), 1200);
    }, 300);
  };
  ctx.signal.addEventListener("abort", () => clearTimeout(timer));
  follow("/v1/events?cursor=now&category=run&type=RunQueued,RunStarted,StepCompleted,StepFailed,RunCompleted,RunFailed,RunCancelled,BudgetExceeded,RunResumed,AttemptLost", soon, {
    signal: ctx.signal,
    onState: (state) => {
      live.textContent = state === "live" ? "● live" : "reconnecting…";
      live.className = state === "live" ? "live on" : "live";
    },
  }).catch(() => {
    live.textContent = "not live";
  });
  ctx.every(() => load().catch(() => {}), 15000);
}

// Spend by day, agent and model; the costliest runs; runs stopped by their budget.
import { agents, api } from "../lib/api.js";
import { bars } from "../lib/charts.js";
import { add, badge, card, field, h, section, select, table } from "../lib/dom.js";
import { count, usd, when } from "../lib/format.js";
import { runsTable } from "./runs.js";

const RANGES = [
  ["7", "Last 7 days"],
  ["30", "Last 30 days"],
  ["90", "Last 90 days"],
];

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

export default async function cost(ctx) {
  ctx.title("Cost");
  const days = RANGES.some(([d]) => d === ctx.query.get("days")) ? ctx.query.get("days") : "30";
  const picker = select({ name: "days" }, RANGES, days);
  picker.addEventListener("change", () => ctx.navigate(`/cost?days=${picker.value}`, { replace: true }));
  const to = new Date();
  const from = new Date(to.getTime() - (Number(days) - 1) * 86400000);
  const range = { from: isoDay(from), to: isoDay(to) };
  const signal = ctx.signal;

  const [totals, daily, breakdown, costliest, overBudget, known] = await Promise.all([
    api("/v1/usage", { params: range, signal }),
    api("/v1/usage/daily", { params: range, signal }),
    api("/v1/usage/breakdown", { params: range, signal }),
    api("/v1/usage/runs", { params: { ...range, limit: 10 }, signal }),
    api("/v1/runs", { params: { status: "budget_exceeded", limit: 20 }, signal }),
    agents(signal),
  ]);
  const agentName = (id) => known.byId.get(id)?.name || id;
  const agentLink = (id) => h("a", { href: `/agents/${encodeURIComponent(id)}` }, agentName(id));

  add(ctx.main, 
    h("div", { class: "page-head" }, h("h1", null, "Cost"), h("div", { class: "toolbar" }, field("Range", picker))),
    h("p", { class: "muted" }, `UTC days ${totals.from} to ${totals.to}.`),
    h(
      "div",
      { class: "cards" },
      card("Spend", usd(totals.cost_usd), totals.runs === 1 ? "1 run" : `${totals.runs} runs`),
      card("Model calls", count(totals.calls)),
      card("Input tokens", count(totals.input_tokens), `${count(totals.cached_tokens)} cached`),
      card("Output tokens", count(totals.output_tokens)),
    ),
    section(
      "Spend by day",
      bars(
        daily.days.map((d) => ({ title: `${d.day}: ${usd(d.cost_usd)}, ${d.calls} calls`, parts: [{ value: Number.parseFloat(d.cost_usd), kind: "cost" }] })),
        { label: `Spend per day from ${daily.from} to ${daily.to}`, axis: [daily.from, daily.to] },
      ),
      table(
        [
          { label: "Day", cell: (d) => d.day },
          { label: "Calls", class: "num", cell: (d) => count(d.calls) },
          { label: "Tokens", class: "num", cell: (d) => `${count(d.input_tokens)} in · ${count(d.output_tokens)} out` },
          { label: "Spend", class: "num", cell: (d) => usd(d.cost_usd) },
        ],
        daily.days.filter((d) => d.calls > 0).reverse(),
        { caption: "Spend by day", empty: "No model calls in this range." },
      ),
    ),
    h(
      "div",
      { class: "columns" },
      section(
        "By agent",
        table(
          [
            { label: "Agent", cell: (a) => agentLink(a.agent_id) },
            { label: "Runs", class: "num", cell: (a) => String(a.runs) },
            { label: "Calls", class: "num", cell: (a) => count(a.calls) },
            { label: "Spend", class: "num", cell: (a) => usd(a.cost_usd) },
          ],
          breakdown.by_agent,
          { caption: "Spend by agent", empty: "No spend yet." },
        ),
      ),
      section(
        "By model",
        table(
          [
            { label: "Model", cell: (m) => m.model },
            { label: "Calls", class: "num", cell: (m) => count(m.calls) },
            { label: "Tokens", class: "num", cell: (m) => `${count(m.input_tokens)} in · ${count(m.output_tokens)} out` },
            { label: "Spend", class: "num", cell: (m) => usd(m.cost_usd) },
          ],
          breakdown.by_model,
          { caption: "Spend by model", empty: "No spend yet." },
        ),
      ),
    ),
    section(
      "Costliest runs",
      table(
        [
          { label: "Run", cell: (r) => h("a", { href: `/runs/${encodeURIComponent(r.id)}` }, r.id) },
          { label: "Agent", cell: (r) => agentLink(r.agent_id) },
          { label: "Status", cell: (r) => badge(r.status) },
          { label: "Tokens", class: "num", cell: (r) => `${count(r.total_input_tokens)} in · ${count(r.total_output_tokens)} out` },
          { label: "Cost", class: "num", cell: (r) => usd(r.cost_usd) },
          { label: "Budget", class: "num", cell: (r) => (r.budget_cents === null ? "–" : usd(r.budget_cents / 100)) },
          { label: "Created", cell: (r) => when(r.created_at) },
        ],
        costliest.data,
        { caption: "Costliest runs", empty: "No run has cost anything in this range." },
      ),
    ),
    section(
      "Runs stopped by their budget",
      h("p", { class: "muted" }, "Open one to resume it with a larger budget: it continues from its last checkpoint."),
      runsTable(overBudget, known, "Runs stopped by their budget", "No run is waiting for a larger budget."),
    ),
  );
}

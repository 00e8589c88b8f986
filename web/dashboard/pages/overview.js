// The project at a glance: run rate, failure rate, p95 duration, active runs, queue depth and
// spend over a recent window, refreshed every few seconds.
import { agents, api } from "../lib/api.js";
import { bars } from "../lib/charts.js";
import { add, badge, card, clear, field, h, section, select, table } from "../lib/dom.js";
import { dateTime, duration, percent, runDuration, usd, when } from "../lib/format.js";

const WINDOWS = [
  ["15", "Last 15 minutes"],
  ["60", "Last hour"],
  ["360", "Last 6 hours"],
  ["1440", "Last 24 hours"],
];

export default async function overview(ctx) {
  ctx.title("Overview");
  const windowMinutes = WINDOWS.some(([w]) => w === ctx.query.get("window")) ? ctx.query.get("window") : "60";
  const picker = select({ name: "window" }, WINDOWS, windowMinutes);
  picker.addEventListener("change", () => ctx.navigate(`/?window=${picker.value}`, { replace: true }));
  const cards = h("div", { class: "cards", "aria-live": "off" });
  const chart = h("div");
  const recent = h("div");
  add(ctx.main, 
    h("div", { class: "page-head" }, h("h1", null, "Overview"), h("div", { class: "toolbar" }, field("Window", picker))),
    cards,
    section("Runs per minute", chart),
    section("Recent runs", recent),
  );

  async function refresh() {
    const [data, runs, known] = await Promise.all([
      api("/v1/overview", { params: { window: windowMinutes }, signal: ctx.signal }),
      api("/v1/runs", { params: { limit: 8 }, signal: ctx.signal }),
      agents(ctx.signal),
    ]);
    clear(
      cards,
      card("Runs per minute", data.runs_per_minute.toFixed(2), `${data.runs_created} started`),
      card("Failure rate", percent(data.failure_rate), `${data.runs_ended} ended`),
      card("p95 duration", duration(data.p95_duration_ms), `p50 ${duration(data.p50_duration_ms)}`),
      card("Active runs", String(data.active_runs)),
      card("Queue depth", String(data.queue_depth), "runs waiting for a worker"),
      card("Spend today", usd(data.spend_today_usd), `${usd(data.spend_last_7_days_usd)} in 7 days`),
    );
    clear(
      chart,
      bars(
        data.per_minute.map((m) => ({
          title: `${dateTime(m.minute)}: ${m.created} started, ${m.completed} completed, ${m.failed} failed, ${m.other} other`,
          parts: [
            { value: m.completed, kind: "ok" },
            { value: m.failed, kind: "failed" },
            { value: m.other, kind: "other" },
            { value: Math.max(0, m.created - m.completed - m.failed - m.other), kind: "started" },
          ],
        })),
        { label: `Runs per minute over the last ${windowMinutes} minutes`, axis: [dateTime(data.since), "now"] },
      ),
      h(
        "p",
        { class: "legend muted" },
        h("span", { class: "key key-ok" }),
        "completed ",
        h("span", { class: "key key-failed" }),
        "failed ",
        h("span", { class: "key key-other" }),
        "cancelled or over budget ",
        h("span", { class: "key key-started" }),
        "started",
      ),
    );
    clear(
      recent,
      table(
        [
          { label: "Run", cell: (r) => h("a", { href: `/runs/${encodeURIComponent(r.id)}` }, r.id) },
          { label: "Agent", cell: (r) => known.byId.get(r.agent_id)?.name || r.agent_id },
          { label: "Status", cell: (r) => badge(r.status) },
          { label: "Cost", class: "num", cell: (r) => usd(r.cost_usd) },
          { label: "Duration", class: "num", cell: (r) => duration(runDuration(r)) },
          { label: "Created", cell: (r) => when(r.created_at) },
        ],
        runs,
        { caption: "Recent runs", empty: "No runs yet. Start one from an agent's page or the API." },
      ),
      h("p", null, h("a", { href: "/runs" }, "All runs →")),
    );
  }

  await refresh();
  ctx.every(() => refresh().catch(() => {}), 5000);
}

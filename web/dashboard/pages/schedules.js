// Cron schedules: their next fires and, on demand, their fire history; pause and resume.
import { agents, all, api } from "../lib/api.js";
import { add, badge, clear, errorBox, h, prose, table } from "../lib/dom.js";
import { dateTime, when } from "../lib/format.js";

/** The next fire times, in the schedule's own time zone. */
export function nextFires(schedule) {
  if (!schedule.next_fire_times.length) return h("span", { class: "muted" }, schedule.enabled ? "none" : "paused");
  return h(
    "ol",
    { class: "fires" },
    schedule.next_fire_times.slice(0, 3).map((t) => h("li", null, h("time", { datetime: t, title: dateTime(t) }, dateTime(t, schedule.timezone)))),
  );
}

function history(fires) {
  return table(
    [
      { label: "Fire time", cell: (f) => dateTime(f.fire_at) },
      { label: "Outcome", cell: (f) => badge(f.status) },
      { label: "Run", cell: (f) => (f.run_id ? h("a", { href: `/runs/${encodeURIComponent(f.run_id)}` }, f.run_id) : "–") },
      { label: "Why", cell: (f) => [f.reason, f.detail].filter(Boolean).join(": ") || "–" },
      { label: "Recorded", cell: (f) => when(f.recorded_at) },
    ],
    fires,
    { caption: "Fire history", empty: "It has not fired yet." },
  );
}

export default async function schedulesPage(ctx) {
  ctx.title("Schedules");
  const [schedules, known] = await Promise.all([all("/v1/schedules", { signal: ctx.signal, max: 200 }), agents(ctx.signal)]);
  const list = h("div");
  add(ctx.main, 
    h("div", { class: "page-head" }, h("h1", null, "Schedules")),
    h("p", { class: "muted" }, "Next fires are shown in each schedule's time zone."),
    list,
  );
  if (!schedules.length) {
    list.append(h("p", { class: "empty" }, prose("No schedules. Create one with `papayya schedules create`.")));
    return;
  }
  for (const schedule of schedules) list.append(scheduleCard(ctx, schedule, known));
}

function scheduleCard(ctx, initial, known) {
  let schedule = initial;
  const agent = known.byId.get(schedule.agent_id);
  const panelId = `fires-${schedule.id}`;
  const panel = h("div", { id: panelId, hidden: true });
  const toggle = h("button", { type: "button", class: "button small", "aria-expanded": "false", "aria-controls": panelId }, "Fire history");
  const pause = h("button", { type: "button", class: "button small" });
  const state = h("span");
  const facts = h("dl", { class: "facts compact" });
  const box = h(
    "article",
    { class: "panel schedule", "aria-label": `Schedule ${schedule.cron_expression} of ${agent ? agent.name : schedule.agent_id}` },
    h(
      "div",
      { class: "page-head" },
      h("h2", null, h("code", null, schedule.cron_expression), " ", h("span", { class: "muted" }, schedule.timezone)),
      state,
      h("div", { class: "actions" }, pause, toggle),
    ),
    facts,
    panel,
  );
  const draw = () => {
    clear(state, badge(schedule.enabled ? "enabled" : "paused"));
    pause.textContent = schedule.enabled ? "Pause" : "Resume";
    clear(
      facts,
      [
        ["Agent", h("a", { href: `/agents/${encodeURIComponent(schedule.agent_id)}` }, agent ? agent.name : schedule.agent_id)],
        ["Next fires", nextFires(schedule)],
        ["Last fire", schedule.last_fire_at ? dateTime(schedule.last_fire_at) : "never"],
        ["Last run", schedule.last_run_id ? h("a", { href: `/runs/${encodeURIComponent(schedule.last_run_id)}` }, schedule.last_run_id) : "–"],
        ["Missed fires", schedule.catchup_policy],
        ["Overlap", schedule.overlap_policy],
      ].map(([k, v]) => h("div", null, h("dt", null, k), h("dd", null, v))),
    );
  };
  pause.addEventListener("click", async () => {
    pause.disabled = true;
    try {
      schedule = await api(`/v1/schedules/${encodeURIComponent(schedule.id)}`, { method: "PATCH", body: { enabled: !schedule.enabled } });
      ctx.toast(schedule.enabled ? "Schedule resumed." : "Schedule paused.");
      draw();
    } catch (error) {
      panel.hidden = false;
      clear(panel, errorBox(error));
    } finally {
      pause.disabled = false;
    }
  });
  toggle.addEventListener("click", async () => {
    const open = panel.hidden;
    panel.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (!open) return;
    clear(panel, h("p", { class: "muted" }, "Loading fires…"));
    try {
      const fires = await all(`/v1/schedules/${encodeURIComponent(schedule.id)}/fires`, { signal: ctx.signal, max: 100 });
      clear(panel, h("h3", null, "Fire history"), history(fires));
    } catch (error) {
      clear(panel, errorBox(error));
    }
  });
  draw();
  return box;
}

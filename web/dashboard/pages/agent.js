// One agent: its configuration, deployments (versions, build status and log), schedules,
// webhooks and recent runs, and a form to start a run.
import { agents, all, api } from "../lib/api.js";
import { add, badge, clear, code, errorBox, field, h, section, table } from "../lib/dom.js";
import { dateTime, when } from "../lib/format.js";
import { budget } from "./agents.js";
import { runsTable } from "./runs.js";
import { nextFires } from "./schedules.js";

function deployments(list) {
  return table(
    [
      { label: "Version", cell: (d) => `v${d.version}` },
      { label: "Status", cell: (d) => badge(d.status) },
      { label: "Runtime", cell: (d) => d.runtime },
      { label: "Image or entry point", cell: (d) => h("code", { class: "wrap" }, d.image || d.entrypoint) },
      { label: "Created", cell: (d) => when(d.created_at) },
      {
        label: "Build log",
        cell: (d) =>
          d.build_log || d.error_message
            ? h(
                "details",
                { class: "payload" },
                h("summary", null, d.status === "failed" ? "Build log (failed)" : "Build log"),
                d.error_message ? errorBox(d.error_message) : null,
                d.build_log ? code(d.build_log, `Build log of version ${d.version}`) : null,
              )
            : h("span", { class: "muted" }, "–"),
      },
    ],
    list,
    { caption: "Deployments", empty: "No deployments: run `papayya deploy` or `papayya agents register`." },
  );
}

function startForm(ctx, agent) {
  const input = h("textarea", { name: "input", rows: "3", spellcheck: "false" }, "{}");
  const status = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "start-form" },
    field("Input (JSON)", input, "Passed to the agent as its input."),
    h("button", { type: "submit", class: "button primary" }, "Start a run"),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let value;
    try {
      value = input.value.trim() ? JSON.parse(input.value) : null;
    } catch {
      clear(status, errorBox("The input is not valid JSON."));
      input.focus();
      return;
    }
    try {
      const run = await api(`/v1/agents/${encodeURIComponent(agent.id)}/runs`, { method: "POST", body: { input: value } });
      ctx.navigate(`/runs/${encodeURIComponent(run.id)}`);
    } catch (error) {
      clear(status, errorBox(error));
    }
  });
  return form;
}

export default async function agentPage(ctx) {
  const [ref] = ctx.params;
  const signal = ctx.signal;
  const agent = await api(`/v1/agents/${encodeURIComponent(ref)}`, { signal });
  ctx.title(agent.name);
  const path = `/v1/agents/${encodeURIComponent(agent.id)}`;
  const [deps, schedules, hooks, runs, known] = await Promise.all([
    all(`${path}/deployments`, { signal, max: 50 }),
    all(`${path}/schedules`, { signal, max: 50 }),
    all(`${path}/webhooks`, { signal, max: 50 }),
    api("/v1/runs", { params: { agent_id: agent.id, limit: 10 }, signal }),
    agents(signal),
  ]);
  const config = agent.config;
  const facts = [
    ["Slug", h("code", null, agent.slug)],
    ["Id", h("code", null, agent.id)],
    ["Model", config.model || "–"],
    ["Budget per run", budget(config)],
    ["Max steps", config.max_steps === null ? "no limit" : String(config.max_steps)],
    ["Loop threshold", String(config.loop_threshold)],
    ["Tools", config.tools.length ? config.tools.map((t) => (typeof t === "string" ? t : t.name || t.function?.name || "tool")).join(", ") : "–"],
    ["Definition", `version ${agent.version}, updated ${dateTime(agent.updated_at)}`],
  ];
  const depsBox = h("div", null, deployments(deps));
  add(ctx.main, 
    h("p", { class: "crumbs" }, h("a", { href: "/agents" }, "Agents"), " / "),
    h("div", { class: "page-head" }, h("h1", null, agent.name)),
    agent.description ? h("p", null, agent.description) : null,
    h("dl", { class: "facts" }, facts.map(([k, v]) => h("div", null, h("dt", null, k), h("dd", null, v)))),
    section("Start a run", startForm(ctx, agent)),
    section("Deployments", depsBox),
    section(
      "Schedules",
      table(
        [
          { label: "Cron", cell: (s) => h("code", null, s.cron_expression) },
          { label: "Time zone", cell: (s) => s.timezone },
          { label: "State", cell: (s) => badge(s.enabled ? "enabled" : "paused") },
          { label: "Next fires", cell: (s) => nextFires(s) },
        ],
        schedules,
        { caption: "Schedules", empty: "No schedules." },
      ),
      h("p", null, h("a", { href: "/schedules" }, "All schedules and their fire history →")),
    ),
    section(
      "Webhooks",
      table(
        [
          { label: "Name", cell: (w) => w.name },
          { label: "Trigger URL", cell: (w) => h("code", { class: "wrap" }, w.trigger_url) },
          { label: "Rate limit", class: "num", cell: (w) => `${w.rate_limit_per_minute}/min` },
        ],
        hooks,
        { caption: "Webhooks", empty: "No webhooks." },
      ),
    ),
    section(
      "Recent runs",
      runsTable(runs, known, "Recent runs", "No runs yet."),
      h("p", null, h("a", { href: `/runs?agent=${encodeURIComponent(agent.id)}` }, "All runs of this agent →")),
    ),
  );
  // A build in progress: follow it until it is ready or failed.
  if (deps.some((d) => d.status === "building")) {
    ctx.every(async () => {
      const fresh = await all(`${path}/deployments`, { signal, max: 50 }).catch(() => null);
      if (fresh) clear(depsBox, deployments(fresh));
    }, 3000);
  }
}

// One run (at /runs/{id}, so a link can be shared): status, totals, cost against budget, the
// step waterfall and the timeline, live over server-sent events; cancel, replay from a step,
// resume with a larger budget.
import { ApiError, agents, api, follow } from "../lib/api.js";
import { costLine } from "../lib/charts.js";
import { add, badge, clear, code, errorBox, field, h, section } from "../lib/dom.js";
import { TERMINAL, cents, count, dateTime, duration, runDuration, usd, when } from "../lib/format.js";
import { Waterfall } from "../lib/waterfall.js";

function pathOf(id) {
  return `/v1/runs/${encodeURIComponent(id)}`;
}

function summary(run, known) {
  const agent = known.byId.get(run.agent_id);
  const rows = [
    ["Agent", h("a", { href: `/agents/${encodeURIComponent(run.agent_id)}` }, agent ? agent.name : run.agent_id)],
    ["Deployment", run.deployment_version ? `version ${run.deployment_version}` : "–"],
    ["Attempt", String(run.attempt)],
    ["Trigger", run.trigger],
    ["Steps", run.max_steps ? `${run.current_step} of at most ${run.max_steps}` : String(run.current_step)],
    ["Cost", h("span", { title: `$${run.cost_usd}` }, usd(run.cost_usd))],
    ["Budget", cents(run.budget_cents)],
    ["Tokens", `${count(run.total_input_tokens)} in (${count(run.total_cached_tokens)} cached) · ${count(run.total_output_tokens)} out`],
    ["Duration", duration(runDuration(run))],
    ["Created", when(run.created_at)],
    ["Started", run.started_at ? dateTime(run.started_at) : "–"],
    ["Ended", run.completed_at ? dateTime(run.completed_at) : "–"],
  ];
  if (run.replayed_from) {
    rows.unshift([
      "Replay of",
      h("span", null, h("a", { href: `/runs/${encodeURIComponent(run.replayed_from)}`, class: "replay-source" }, run.replayed_from), ` from step ${run.replay_from_step}`),
    ]);
  }
  if (run.diverged_at_step !== null) rows.push(["Diverged", `at step ${run.diverged_at_step}: it ran live from there`]);
  if (run.idempotency_key) rows.push(["Idempotency key", run.idempotency_key]);
  return h("dl", { class: "facts" }, rows.map(([k, v]) => h("div", null, h("dt", null, k), h("dd", { dataset: { fact: k } }, v))));
}

export default async function runPage(ctx) {
  const [runId] = ctx.params;
  ctx.title(`Run ${runId}`);
  let run = await api(pathOf(runId), { signal: ctx.signal });
  const known = await agents(ctx.signal);

  const status = h("span", { id: "run-status" });
  const live = h("span", { class: "live", "aria-live": "polite" });
  const actions = h("div", { class: "actions", id: "run-actions" });
  const facts = h("div");
  const problem = h("div");
  const chart = h("div");
  const timeline = h("ol", { class: "timeline" });
  const io = h("div", { class: "io" });
  const waterfall = new Waterfall(runId, { onReplay: (n, panel) => confirmReplay(n, panel) });

  add(ctx.main, 
    h("p", { class: "crumbs" }, h("a", { href: "/runs" }, "Runs"), " / "),
    h("div", { class: "page-head" }, h("h1", null, "Run ", h("code", { class: "run-id" }, runId)), status, live),
    actions,
    facts,
    problem,
    section("Cost against budget", chart),
    section("Steps", h("p", { class: "muted" }, "Select a step to see its model request and response, tool calls and checkpoint result."), waterfall.element),
    section("Timeline", timeline),
    section("Input and output", io),
  );

  let drawnStatus = null;
  let cancelRequested = false;
  function drawRun() {
    clear(status, badge(run.status));
    // A local run (the SDK's own process) whose heartbeat stopped: its process may be gone.
    if (run.no_heartbeat_since && run.status === "running") {
      add(status, " ", h("span", { class: "muted", id: "run-liveness" }, `no heartbeat since ${dateTime(run.no_heartbeat_since)}`));
    }
    // Redrawn as the run moves on, but never from under the keyboard focus.
    if (!facts.contains(document.activeElement)) clear(facts, summary(run, known));
    clear(problem, run.error_code ? errorBox(`${run.error_code}: ${run.error_message || ""}`) : null);
    clear(io, h("div", null, h("h3", null, "Input"), code(run.input, "Run input")), h("div", null, h("h3", null, "Output"), code(run.output, "Run output")));
    waterfall.setRun(run);
    drawChart();
    if (run.status !== drawnStatus) drawActions(); // keep a half-done confirmation in place
    drawnStatus = run.status;
  }

  function drawChart() {
    const points = waterfall.cumulative();
    const budget = run.budget_cents === null ? null : run.budget_cents / 100;
    const spent = points.length ? points[points.length - 1][1] : 0;
    if (spent === 0 && budget === null) {
      clear(chart, h("p", { class: "muted" }, "No model calls have cost anything, and the run has no budget."));
      return;
    }
    clear(
      chart,
      costLine(points, budget, { label: `Cumulative cost per step${budget === null ? "" : " against the budget"}` }),
      h(
        "p",
        { class: "legend muted" },
        h("span", { class: "key key-cost" }),
        `spent ${usd(spent)} over ${points.length === 1 ? "1 step" : `${points.length} steps`} `,
        budget === null ? "· no budget" : h("span", null, h("span", { class: "key key-budget" }), `budget ${usd(budget)} (${Math.round((spent / budget) * 100) || 0}% used)`),
      ),
    );
  }

  function confirmGroup(question, yesLabel, onYes, noLabel = "Back") {
    const yes = h("button", { type: "button", class: "button danger" }, yesLabel);
    const no = h("button", { type: "button", class: "button" }, noLabel);
    const group = h("div", { class: "confirm", role: "group", "aria-label": question }, h("span", null, question), yes, no);
    yes.addEventListener("click", () => onYes(yes));
    no.addEventListener("click", drawActions);
    setTimeout(() => yes.focus());
    return group;
  }

  function drawActions() {
    clear(actions);
    if (cancelRequested && !TERMINAL.has(run.status)) {
      actions.append(h("p", { class: "muted" }, "Cancel requested: waiting for the agent to stop."));
    } else if (run.status === "queued" || run.status === "running") {
      const cancel = h("button", { type: "button", class: "button danger", id: "cancel-run" }, "Cancel run");
      cancel.addEventListener("click", () =>
        clear(actions, confirmGroup("Cancel this run?", "Yes, cancel it", async (button) => {
          button.disabled = true;
          try {
            run = await api(`${pathOf(runId)}/cancel`, { method: "POST", body: { reason: "cancelled from the dashboard" } });
            cancelRequested = true;
            ctx.toast(run.status === "cancelled" ? "Run cancelled." : "Cancel requested: the agent is being stopped.");
            drawRun();
            drawActions();
          } catch (error) {
            clear(actions, errorBox(error));
          }
        }, "Keep it running")),
      );
      actions.append(cancel);
    }
    if (run.status === "budget_exceeded") {
      const suggested = Math.max((run.budget_cents || 0) * 2, (run.budget_cents || 0) + 100);
      const input = h("input", { type: "number", name: "budget_cents", min: String((run.budget_cents || 0) + 1), step: "1", value: String(suggested), inputmode: "numeric" });
      const form = h("form", { class: "inline-form" }, field("New budget (cents)", input), h("button", { type: "submit", class: "button primary" }, "Resume with this budget"));
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        try {
          run = await api(`${pathOf(runId)}/resume`, { method: "POST", body: { budget_cents: Number(input.value) } });
          ctx.toast("Run resumed: it continues from its last checkpoint.");
          drawRun();
          watch();
        } catch (error) {
          form.append(errorBox(error));
        }
      });
      actions.append(form);
    }
  }

  function confirmReplay(n, panel) {
    const box = h("div", { class: "confirm-box" });
    const start = async (allowMismatch) => {
      try {
        const made = await api(`${pathOf(runId)}/replay`, { method: "POST", body: { from_step: n, ...(allowMismatch ? { allow_version_mismatch: true } : {}) } });
        ctx.toast(`Replay ${made.id} started.`);
        ctx.navigate(`/runs/${encodeURIComponent(made.id)}`);
      } catch (error) {
        const retry = error instanceof ApiError && error.status === 409 && !allowMismatch
          ? h("button", { type: "button", class: "button", on: { click: () => start(true) } }, "Replay anyway")
          : null;
        clear(box, errorBox(error), retry);
      }
    };
    const go = h("button", { type: "button", class: "button primary" }, `Start replay from step ${n}`);
    const back = h("button", { type: "button", class: "button" }, "Back");
    go.addEventListener("click", () => {
      go.disabled = true;
      start(false);
    });
    back.addEventListener("click", () => box.remove());
    clear(
      box,
      h("p", null, `A new run: steps before ${n} are answered from this run's recording (no cost); step ${n} onward run live.`),
      h("div", { class: "actions" }, go, back),
    );
    panel.querySelector(".confirm-box")?.remove();
    panel.append(box);
    go.focus();
  }

  async function drawTimeline() {
    const markers = (await api(`${pathOf(runId)}/timeline`, { signal: ctx.signal })).data;
    waterfall.setMarkers(markers);
    clear(
      timeline,
      markers.map((m) =>
        h("li", { class: `marker-${m.kind}` }, h("span", { class: "marker-kind" }, m.kind), " ", m.detail, h("span", { class: "muted" }, ` · before step ${m.step} · `, m.at ? dateTime(m.at) : "")),
      ),
    );
  }

  let pendingRefresh = null;
  async function refresh() {
    run = await api(pathOf(runId), { signal: ctx.signal });
    drawRun();
    await drawTimeline();
  }
  function refreshSoon() {
    clearTimeout(pendingRefresh);
    pendingRefresh = setTimeout(() => refresh().catch(() => {}), 250);
  }
  ctx.signal.addEventListener("abort", () => clearTimeout(pendingRefresh));

  function watch() {
    live.textContent = "connecting…";
    follow(
      `${pathOf(runId)}/events`,
      (message) => {
        if (message.event === "step") {
          waterfall.upsert(JSON.parse(message.data));
          drawChart();
          refreshSoon();
        } else if (message.event === "terminal") {
          live.textContent = "ended";
          live.className = "live";
          refresh().catch(() => {});
        } else if (message.event === "error") {
          problem.append(errorBox(JSON.parse(message.data).error));
        }
      },
      {
        signal: ctx.signal,
        stop: (message) => message.event === "terminal",
        onState: (state) => {
          live.textContent = state === "live" ? "● live" : "reconnecting…";
          live.className = state === "live" ? "live on" : "live";
        },
      },
    ).catch((error) => {
      if (!ctx.signal.aborted) problem.append(errorBox(error));
    });
  }

  drawRun();
  await drawTimeline();
  watch();
  // While it runs, the bars and duration grow with the clock.
  ctx.every(() => {
    if (!TERMINAL.has(run.status)) {
      waterfall.layout();
      const shown = facts.querySelector('[data-fact="Duration"]');
      if (shown) shown.textContent = duration(runDuration(run));
    }
  }, 1000);
}

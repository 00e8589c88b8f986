// A run's steps as a waterfall: one row per step (type, name, a bar placed by its start and
// sized by its duration, tokens, cost and cumulative cost), with the run's markers (recovery,
// divergence, replay, cancel, budget, end) between the rows. Rows update in place, so a
// live stream never moves the keyboard focus; each row expands to the step in full.
import { api } from "./api.js";
import { badge, clear, code, errorBox, h } from "./dom.js";
import { count, dateTime, duration, usd } from "./format.js";

// Run-level markers shown between the steps (the full list is in the run's timeline).
const INLINE = new Set(["recovery", "divergence", "cancel", "budget", "resumed", "ended"]);

function dollars(value) {
  return Number.parseFloat(value || "0") || 0;
}

export class Waterfall {
  constructor(runId, { onReplay }) {
    this.runId = runId;
    this.onReplay = onReplay;
    this.steps = new Map();
    this.rows = new Map();
    this.details = new Map();
    this.markers = [];
    this.run = null;
    this.list = h("ol", { class: "waterfall", "aria-label": "Steps" });
    this.pending = h("li", { class: "step-pending", hidden: true });
    this.empty = h("p", { class: "empty" }, "No steps yet.");
    this.element = h("div", { class: "waterfall-wrap" }, this.empty, this.list);
    this.list.append(this.pending);
  }

  setRun(run) {
    this.run = run;
    this.layout();
  }

  setMarkers(markers) {
    this.markers = markers;
    for (const el of this.list.querySelectorAll(".marker")) el.remove();
    const shown = markers.filter((m) => INLINE.has(m.kind) || (m.kind === "started" && m.attempt > 1));
    const run = this.run;
    if (run && run.replayed_from) {
      shown.push({
        kind: "replay",
        step: run.replay_from_step,
        detail: `live from step ${run.replay_from_step}: steps before it were answered from ${run.replayed_from}'s recording, at no cost`,
      });
    }
    for (const marker of shown) {
      const el = h("li", { class: ["marker", `marker-${marker.kind}`], dataset: { key: String(marker.step - 0.5) } },
        h("span", { class: "marker-kind" }, marker.kind),
        " ",
        marker.detail,
        marker.at ? h("span", { class: "muted" }, " · ", dateTime(marker.at)) : null,
      );
      this.place(el);
    }
    this.layout();
  }

  /** Insert before the first element whose key is greater (rows: n; markers: n - 0.5). */
  place(el) {
    const key = Number(el.dataset.key);
    for (const other of this.list.children) {
      if (other === this.pending) break;
      if (Number(other.dataset.key) > key) {
        this.list.insertBefore(el, other);
        return;
      }
    }
    this.list.insertBefore(el, this.pending);
  }

  upsert(step) {
    const n = step.step_number;
    const before = this.steps.get(n);
    this.steps.set(n, step);
    let row = this.rows.get(n);
    if (!row) {
      const panelId = `step-${n}-detail`;
      const toggle = h("button", { type: "button", class: "step-toggle", "aria-expanded": "false", "aria-controls": panelId });
      const panel = h("div", { class: "step-detail", id: panelId, hidden: true });
      row = { li: h("li", { class: "step", dataset: { key: String(n), step: String(n) } }, toggle, panel), toggle, panel, bar: null, cumulative: null };
      toggle.addEventListener("click", () => this.toggle(n));
      this.rows.set(n, row);
      this.place(row.li);
    } else if (before && JSON.stringify(before) !== JSON.stringify(step)) {
      this.details.delete(n); // changed: load again when shown
      if (!row.panel.hidden) this.load(n);
    }
    this.draw(n);
    this.layout();
  }

  draw(n) {
    const step = this.steps.get(n);
    const row = this.rows.get(n);
    const run = this.run || {};
    const tags = [];
    if (step.replayed || (run.replayed_from && n < run.replay_from_step)) tags.push(badge("recorded", "recorded"));
    if (run.diverged_at_step === n) tags.push(badge("diverged", "diverged"));
    if (step.error_code === "interrupted") tags.push(badge("interrupted", "interrupted"));
    else if (step.status === "failed") tags.push(badge("failed", "failed"));
    if (step.attempt > 1) tags.push(h("span", { class: "muted" }, `attempt ${step.attempt}`));
    row.bar = h("span", { class: ["step-bar", `bar-${step.step_type}`] });
    row.cumulative = h("span", { class: "step-cum num", title: "cumulative cost" });
    const name = step.label || step.model || step.step_type.replace(/_/g, " ");
    clear(
      row.toggle,
      h("span", { class: "step-num" }, `#${n}`),
      h("span", { class: "step-type" }, badge(step.step_type, "type")),
      h("span", { class: "step-name" }, name, " ", ...tags),
      h("span", { class: "step-track", "aria-hidden": "true" }, row.bar),
      h("span", { class: "step-dur num" }, duration(step.duration_ms)),
      h("span", { class: "step-tokens num" }, step.input_tokens || step.output_tokens ? `${count(step.input_tokens)}/${count(step.output_tokens)} tok` : "–"),
      h("span", { class: "step-cost num" }, usd(step.cost_usd)),
      row.cumulative,
    );
  }

  /** Bars, cumulative costs and the in-progress row, from the whole run's span. */
  layout() {
    const run = this.run || {};
    this.empty.hidden = this.steps.size > 0 || run.status === "running";
    const numbers = [...this.steps.keys()].sort((a, b) => a - b);
    const starts = numbers.map((n) => this.start(this.steps.get(n))).filter((t) => t !== null);
    const t0 = Math.min(...starts, run.started_at ? Date.parse(run.started_at) : Infinity);
    let t1 = Math.max(...numbers.map((n) => this.end(this.steps.get(n)) || 0), run.completed_at ? Date.parse(run.completed_at) : 0);
    if (run.status === "running") t1 = Math.max(t1, Date.now());
    const span = Math.max(t1 - t0, 1);
    let total = 0;
    for (const n of numbers) {
      const step = this.steps.get(n);
      const row = this.rows.get(n);
      total += dollars(step.cost_usd);
      const start = this.start(step);
      const left = Number.isFinite(t0) && start !== null ? ((start - t0) / span) * 100 : 0;
      const width = Number.isFinite(t0) ? (step.duration_ms / span) * 100 : 100;
      row.bar.style.setProperty("left", `${Math.min(Math.max(left, 0), 99.5)}%`);
      row.bar.style.setProperty("width", `${Math.min(Math.max(width, 0.5), 100)}%`);
      row.cumulative.textContent = `Σ ${usd(total)}`;
    }
    const next = run.current_step ?? 0;
    const running = run.status === "running" && next > 0 && !this.steps.has(next - 1);
    this.pending.hidden = !running;
    this.pending.textContent = running ? `Step ${next - 1} in progress…` : "";
  }

  start(step) {
    // From its end when it has one: a task's step is written once its result is known, so
    // its recorded start is when it was written, not when the work began.
    if (step.completed_at) return Date.parse(step.completed_at) - step.duration_ms;
    if (step.started_at) return Date.parse(step.started_at);
    return null;
  }

  end(step) {
    if (step.completed_at) return Date.parse(step.completed_at);
    const start = this.start(step);
    return start === null ? null : start + step.duration_ms;
  }

  /** [step, cumulative dollars] in step order. */
  cumulative() {
    let total = 0;
    return [...this.steps.keys()].sort((a, b) => a - b).map((n) => {
      total += dollars(this.steps.get(n).cost_usd);
      return [n, total];
    });
  }

  toggle(n) {
    const row = this.rows.get(n);
    const open = row.panel.hidden;
    row.panel.hidden = !open;
    row.toggle.setAttribute("aria-expanded", String(open));
    row.li.classList.toggle("open", open);
    if (open && !this.details.has(n)) this.load(n);
  }

  async load(n) {
    const row = this.rows.get(n);
    clear(row.panel, h("p", { class: "muted" }, "Loading step…"));
    try {
      const detail = await api(`/v1/runs/${encodeURIComponent(this.runId)}/steps/${n}`);
      this.details.set(n, detail);
      clear(row.panel, stepDetail(detail, () => this.onReplay(n, row.panel)));
    } catch (error) {
      clear(row.panel, errorBox(error));
    }
  }
}

function sub(title, ...children) {
  return h("div", { class: "detail-block" }, h("h3", null, title), ...children);
}

function payload(title, p) {
  if (!p) return h("p", { class: "muted" }, `${title}: not recorded`);
  return h(
    "details",
    { class: "payload" },
    h("summary", null, `${title} (${count(p.size)} bytes${p.truncated ? ", cut" : ""})`),
    code(p.content, title),
  );
}

function llmCall(call, i) {
  const meta = [
    `${count(call.input_tokens + call.cached_input_tokens + call.cache_write_tokens)} input tokens (${count(call.cached_input_tokens)} cached)`,
    `${count(call.output_tokens + call.reasoning_tokens)} output${call.reasoning_tokens ? ` (${count(call.reasoning_tokens)} reasoning)` : ""}`,
    usd(call.cost_usd),
    duration(call.duration_ms),
  ];
  if (call.ttft_ms !== null) meta.push(`first token ${duration(call.ttft_ms)}`);
  return sub(
    `Model call ${i + 1}: ${call.provider} ${call.model}`,
    h("p", { class: "muted" }, meta.join(" · "), call.replayed ? " · " : null, call.replayed ? badge("from the recording", "recorded") : null),
    call.error ? errorBox(call.error) : null,
    payload("Request", call.request),
    payload("Response", call.response),
  );
}

function toolCall(call) {
  return sub(
    `Tool call: ${call.tool}`,
    h("p", { class: "muted" }, duration(call.duration_ms), call.call_id ? ` · ${call.call_id}` : ""),
    h("div", { class: "io" }, h("div", null, h("h4", null, "Input"), code(call.input, "Tool input")), h("div", null, h("h4", null, "Output"), code(call.output, "Tool output"))),
    call.error ? h("div", null, h("h4", null, "Error"), errorBox(call.error)) : null,
  );
}

export function stepDetail(detail, replay) {
  const step = detail.step;
  return h(
    "div",
    { class: "detail" },
    h(
      "p",
      { class: "muted" },
      `Step ${step.step_number} · ${step.step_type.replace(/_/g, " ")} · ${step.status} · attempt ${step.attempt}`,
      step.started_at ? ` · started ${dateTime(step.started_at)}` : "",
    ),
    step.error || step.error_code ? errorBox(`${step.error_code || "error"}: ${step.error || ""}`) : null,
    detail.llm_calls.map(llmCall),
    detail.tool_calls.map(toolCall),
    detail.checkpoint ? sub(`Checkpoint: ${detail.checkpoint.label}`, h("h4", null, "Result"), code(detail.checkpoint.result, "Checkpoint result")) : null,
    !detail.checkpoint && step.output !== null ? sub("Output", code(step.output, "Step output")) : null,
    detail.log && detail.log.length
      ? sub(
          "Log",
          h("pre", { class: "log", "aria-label": "Agent output while the step ran" }, detail.log.map((line) => `${dateTime(line.at)}  ${line.text}\n`).join("")),
        )
      : null,
    sub(
      "Events",
      h(
        "ol",
        { class: "events" },
        detail.events.map((e) => h("li", null, h("code", null, e.type), " ", e.detail, e.at ? h("span", { class: "muted" }, " · ", dateTime(e.at)) : null)),
      ),
    ),
    h("div", { class: "actions" }, h("button", { type: "button", class: "button", on: { click: replay } }, `Replay from step ${step.step_number}`)),
  );
}

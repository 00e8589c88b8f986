// Numbers, money, durations and times as people read them.
import { h } from "./dom.js";

export const TERMINAL = new Set(["completed", "failed", "cancelled", "budget_exceeded"]);
export const STATUSES = ["queued", "running", "completed", "failed", "cancelled", "budget_exceeded"];

/** Dollars from the API's exact decimal string (or a number): cents, or more digits when tiny. */
export function usd(value) {
  const n = typeof value === "number" ? value : Number.parseFloat(value || "0");
  if (!Number.isFinite(n)) return "–";
  if (n === 0) return "$0.00";
  if (Math.abs(n) < 0.01) return "$" + n.toFixed(6).replace(/0+$/, "");
  return "$" + n.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

export function cents(value) {
  return value === null || value === undefined ? "no limit" : usd(value / 100);
}

export function count(n) {
  if (n === null || n === undefined) return "–";
  if (Math.abs(n) < 1000) return String(n);
  if (Math.abs(n) < 1e6) return (n / 1e3).toFixed(n < 1e4 ? 1 : 0) + "k";
  return (n / 1e6).toFixed(1) + "M";
}

export function percent(ratio) {
  return ratio === null || ratio === undefined ? "–" : (ratio * 100).toFixed(ratio < 0.1 && ratio > 0 ? 1 : 0) + "%";
}

export function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  if (ms < 1000) return Math.round(ms) + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A run's duration: start to end, or to now while it runs. */
export function runDuration(run, now = Date.now()) {
  if (!run.started_at) return null;
  const end = run.completed_at ? Date.parse(run.completed_at) : now;
  return end - Date.parse(run.started_at);
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "–";
  const diff = (now - Date.parse(iso)) / 1000;
  const future = diff < 0;
  const s = Math.abs(diff);
  let text;
  if (s < 5) return "just now";
  if (s < 60) text = `${Math.round(s)} s`;
  else if (s < 3600) text = `${Math.round(s / 60)} min`;
  else if (s < 86400) text = `${Math.round(s / 3600)} h`;
  else text = `${Math.round(s / 86400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}

export function dateTime(iso, timeZone) {
  if (!iso) return "–";
  const options = { dateStyle: "medium", timeStyle: "medium" };
  if (timeZone) options.timeZone = timeZone;
  try {
    return new Date(iso).toLocaleString(undefined, options);
  } catch {
    return new Date(iso).toLocaleString();
  }
}

/** A <time> showing "3 min ago", the exact moment in its title. */
export function when(iso) {
  if (!iso) return "–";
  return h("time", { datetime: iso, title: dateTime(iso) }, ago(iso));
}

export function tokens(input, output) {
  return `${count(input)} in · ${count(output)} out`;
}

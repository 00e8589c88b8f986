// Small SVG charts, drawn with attributes only (no inline styles: the page's CSP forbids them).
import { h, svg } from "./dom.js";

/**
 * Bars, one per item: {label, parts: [{value, kind}], title}. Stacked parts; kinds become
 * classes (bar-<kind>). `label` names the chart for screen readers.
 */
export function bars(items, { label, height = 120, axis } = {}) {
  const width = Math.max(items.length, 1) * 10;
  const max = Math.max(1e-12, ...items.map((i) => i.parts.reduce((sum, p) => sum + p.value, 0)));
  const chart = svg("svg", {
    class: "chart",
    viewBox: `0 0 ${width} ${height}`,
    preserveAspectRatio: "none",
    role: "img",
    "aria-label": label,
  });
  items.forEach((item, i) => {
    let top = height;
    const group = svg("g", null, svg("title", null, item.title));
    for (const part of item.parts) {
      if (part.value <= 0) continue;
      const barHeight = Math.max((part.value / max) * (height - 4), 1);
      top -= barHeight;
      group.append(svg("rect", { class: `bar bar-${part.kind}`, x: i * 10 + 1, y: top, width: 8, height: barHeight }));
    }
    // An invisible full-height rect so the whole column shows its tooltip.
    group.append(svg("rect", { class: "bar-hit", x: i * 10, y: 0, width: 10, height }));
    chart.append(group);
  });
  const ends = axis ? h("div", { class: "axis muted", "aria-hidden": "true" }, h("span", null, axis[0]), h("span", null, axis[1])) : null;
  return h("div", { class: "chart-wrap" }, chart, ends);
}

/**
 * Cumulative cost per step against the budget: points are [step, dollars]; budget in dollars
 * or null. Returns the chart and a legend.
 */
export function costLine(points, budget, { label } = {}) {
  const width = 400;
  const height = 100;
  const top = Math.max(budget || 0, ...points.map((p) => p[1]), 1e-9) * 1.1;
  const lastStep = Math.max(1, points.length);
  const x = (i) => (i / lastStep) * width;
  const y = (v) => height - (v / top) * height;
  const chart = svg("svg", {
    class: "chart cost-chart",
    viewBox: `0 0 ${width} ${height}`,
    preserveAspectRatio: "none",
    role: "img",
    "aria-label": label,
  });
  if (budget !== null && budget !== undefined) {
    chart.append(
      svg("line", { class: "budget-line", x1: 0, x2: width, y1: y(budget), y2: y(budget), "vector-effect": "non-scaling-stroke" }),
    );
  }
  let path = `0,${height}`;
  points.forEach(([, value], i) => {
    path += ` ${x(i)},${y(i === 0 ? 0 : points[i - 1][1])} ${x(i)},${y(value)} ${x(i + 1)},${y(value)}`;
  });
  chart.append(svg("polyline", { class: "cost-line", points: path, "vector-effect": "non-scaling-stroke" }));
  return h("div", { class: "chart-wrap" }, chart);
}

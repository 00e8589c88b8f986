// Building the page from data without ever parsing data as HTML: every text goes in as a text
// node (textContent), every attribute through setAttribute, so nothing the API returns can
// become markup or script.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function apply(el, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (name === "on") for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "style") for (const [k, v] of Object.entries(value)) el.style.setProperty(k, v);
    else if (name === "hidden" || name === "disabled" || name === "checked" || name === "selected" || name === "required" || name === "open") el[name] = Boolean(value);
    else if (name === "value") el.value = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

/** An HTML element: h("a", {href: "/runs"}, "Runs"). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  apply(el, props);
  append(el, children);
  return el;
}

/** An SVG element. */
export function svg(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined) continue;
    if (name === "class") el.setAttribute("class", value);
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

/** Append children, skipping null/false (the DOM's own append would write "null"). */
export function add(el, ...children) {
  append(el, children);
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A link inside the app (the router handles the click). */
export function link(href, ...children) {
  return h("a", { href }, ...children);
}

/** A value as pretty JSON in a scrollable, focusable block. */
export function code(value, label) {
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  return h("pre", { class: "code", tabindex: "0", "aria-label": label || null }, text ?? "null");
}

/** Text with `backticked` parts set as code (still text nodes only). */
export function prose(text) {
  return String(text)
    .split("`")
    .map((part, i) => (i % 2 ? h("code", null, part) : part));
}

let ids = 0;
/** A fresh id for label/aria wiring. */
export function uid(prefix = "id") {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled form field. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid("field");
  return h(
    "div",
    { class: "field" },
    h("label", { for: control.id }, label),
    control,
    hint ? h("span", { class: "hint" }, prose(hint)) : null,
  );
}

/** A <select> from [value, label] pairs. */
export function select(props, options, chosen) {
  return h(
    "select",
    props,
    options.map(([value, label]) => h("option", { value, selected: String(value) === String(chosen ?? "") }, label)),
  );
}

/** A table inside a horizontally scrollable wrapper (phones). */
export function table(columns, rows, { caption, empty = "Nothing yet.", rowProps } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, prose(empty));
  // Explicit roles: on a phone the rows are laid out as cards (CSS), which must not cost the
  // table its semantics for screen readers.
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { role: "table" },
      caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h("thead", { role: "rowgroup" }, h("tr", { role: "row" }, columns.map((c) => h("th", { scope: "col", role: "columnheader", class: c.class }, c.label)))),
      h(
        "tbody",
        { role: "rowgroup" },
        rows.map((row) =>
          h(
            "tr",
            { role: "row", ...(rowProps ? rowProps(row) : {}) },
            columns.map((c) => h("td", { role: "cell", class: c.class, "data-label": c.label }, c.cell(row))),
          ),
        ),
      ),
    ),
  );
}

export function section(title, ...children) {
  const id = uid("section");
  return h("section", { class: "panel", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

export function card(label, value, hint) {
  return h(
    "div",
    { class: "card" },
    h("div", { class: "card-label" }, label),
    h("div", { class: "card-value" }, value),
    hint ? h("div", { class: "card-hint muted" }, hint) : null,
  );
}

export function badge(text, kind) {
  return h("span", { class: ["badge", `badge-${kind || text}`] }, String(text).replace(/_/g, " "));
}

export function errorBox(error) {
  const message = error && error.message ? error.message : String(error);
  return h("div", { class: "alert", role: "alert" }, message);
}

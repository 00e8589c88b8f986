// Agents with their latest deployment.
import { agents, api } from "../lib/api.js";
import { add, badge, h, table } from "../lib/dom.js";
import { when } from "../lib/format.js";

export function budget(config) {
  return config.budget_usd === null || config.budget_usd === undefined ? "no limit" : `$${config.budget_usd}`;
}

export default async function agentsPage(ctx) {
  ctx.title("Agents");
  const known = await agents(ctx.signal, { fresh: true });
  // The latest deployment of each (the first 50 agents: one request each).
  const latest = new Map(
    await Promise.all(
      known.list.slice(0, 50).map(async (a) => {
        const page = await api(`/v1/agents/${encodeURIComponent(a.id)}/deployments`, { params: { limit: 1 }, signal: ctx.signal });
        return [a.id, page[0] || null];
      }),
    ),
  );
  add(ctx.main, 
    h("div", { class: "page-head" }, h("h1", null, "Agents")),
    table(
      [
        { label: "Agent", cell: (a) => h("a", { href: `/agents/${encodeURIComponent(a.id)}` }, a.name) },
        { label: "Slug", cell: (a) => h("code", null, a.slug) },
        { label: "Model", cell: (a) => a.config.model || "–" },
        { label: "Budget per run", cell: (a) => budget(a.config) },
        { label: "Max steps", class: "num", cell: (a) => (a.config.max_steps === null ? "–" : String(a.config.max_steps)) },
        {
          label: "Deployment",
          cell: (a) => {
            const d = latest.get(a.id);
            return d ? h("span", null, `v${d.version} `, badge(d.status)) : h("span", { class: "muted" }, "none");
          },
        },
        { label: "Updated", cell: (a) => when(a.updated_at) },
      ],
      known.list,
      { caption: "Agents", empty: "No agents yet. Create one with `papayya agents create` or POST /v1/agents." },
    ),
  );
}

// Every agent's webhooks (their secrets are never shown: the API returns them only once, to
// whoever creates or rotates one).
import { agents, all } from "../lib/api.js";
import { add, h, prose, table } from "../lib/dom.js";
import { when } from "../lib/format.js";

export default async function webhooksPage(ctx) {
  ctx.title("Webhooks");
  const known = await agents(ctx.signal, { fresh: true });
  const lists = await Promise.all(
    known.list.slice(0, 100).map((a) => all(`/v1/agents/${encodeURIComponent(a.id)}/webhooks`, { signal: ctx.signal, max: 200 })),
  );
  const hooks = lists.flat();
  add(ctx.main, 
    h("div", { class: "page-head" }, h("h1", null, "Webhooks")),
    h(
      "p",
      { class: "muted" },
      prose("POST a signed request (Standard Webhooks) to a trigger URL to start a run with its body as input. Create one with `papayya webhooks create`."),
    ),
    table(
      [
        { label: "Name", cell: (w) => w.name },
        { label: "Agent", cell: (w) => h("a", { href: `/agents/${encodeURIComponent(w.agent_id)}` }, known.byId.get(w.agent_id)?.name || w.agent_id) },
        { label: "Trigger URL", cell: (w) => h("code", { class: "wrap" }, w.trigger_url) },
        { label: "Rate limit", class: "num", cell: (w) => `${w.rate_limit_per_minute}/min` },
        { label: "Secret rotated", cell: (w) => when(w.secret_rotated_at) },
        { label: "Created", cell: (w) => when(w.created_at) },
      ],
      hooks,
      { caption: "Webhooks", empty: "No webhooks yet." },
    ),
  );
}

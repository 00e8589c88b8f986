"""The hosted defaults through the published SDK: a run that states no budget or max_steps
shows the project's (500 cents and 50 steps), and "no limit" is a project setting the
published ``projects.update`` can make."""

from __future__ import annotations

from tests.support.published import Published

SCRIPT = """
import json
from papayya import Papayya, Client
p = Papayya()
out = {}
project = p.projects.list()[0]["id"]
out["project"] = p.projects.get(project)
agent = p.agents.create("Plain", "plain", project)["id"]
run = p.runs.create(agent, "hello")
out["run"] = p.runs.get(run["id"])
out["client"] = Client().get_status(Client().run(agent, "hi")["id"])
out["listed"] = [r for r in p.runs.list() if r["id"] == run["id"]]
out["updated"] = p.projects.update(project, default_budget_cents=None, default_max_steps=None)
out["free"] = p.runs.get(p.runs.create(agent, "again")["id"])
print(json.dumps(out))
"""


async def test_a_run_without_limits_shows_the_project_defaults(published: Published) -> None:
    out = await published.script(SCRIPT)
    project = out["project"]
    assert (project["default_budget_cents"], project["default_max_steps"]) == (500, 50)
    run = out["run"]
    assert (run["budget_cents"], run["max_steps"]) == (500, 50)
    assert out["listed"] and out["listed"][0]["budget_cents"] == 500
    # Client.run sends the hosted values itself; the server's agree with them.
    assert (out["client"]["budget_cents"], out["client"]["max_steps"]) == (500, 50)
    updated = out["updated"]
    assert (updated["default_budget_cents"], updated["default_max_steps"]) == (None, None)
    assert (out["free"]["budget_cents"], out["free"]["max_steps"]) == (None, None)

"""Every resource method of the published SDK (``from papayya import Papayya, Client``)
against our server, with the return shapes its callers rely on (a list is a list).

Each scenario runs twice, as the same script: in the published SDK's venv and in ours, where
``papayya`` is this package, so both clients are held to one behaviour."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.builds import BuildService
from tests.support.api import Api, default_project
from tests.support.published import Published, our_venv


@pytest.fixture(params=["published", "ours"])
def published(
    request: pytest.FixtureRequest, published_sdk: Path, api: Api, tmp_path: Path
) -> Published:
    """The user's scripts, run with the published package, then with ours."""
    venv = published_sdk if request.param == "published" else our_venv()
    return Published(venv, api.url, api.key, tmp_path)


PRELUDE = """
import json
from papayya import Papayya, Client
from papayya.api import PapayyaAPIError
p = Papayya()
out = {}
def refused(call):
    try:
        call()
    except PapayyaAPIError as exc:
        return exc.status
    return None
"""


async def test_agents(published: Published) -> None:
    out = await published.script(
        PRELUDE
        + """
project = p.projects.list()[0]["id"]
made = p.agents.create("Researcher", "researcher", project)
out["made"] = made
out["listed"] = [a["id"] for a in p.agents.list()]
out["got"] = p.agents.get("researcher")["id"]
out["updated"] = p.agents.update(made["id"], name="Renamed")["name"]
out["with_config"] = p.agents.create(
    "Other", "other", project, config={"model": "gpt-4o-mini"}, description="d"
)["config"]["model"]
print(json.dumps(out))
"""
    )
    made = out["made"]
    assert made["slug"] == "researcher" and made["name"] == "Researcher"
    assert out["listed"][-1] == made["id"] and out["got"] == made["id"]
    assert out["updated"] == "Renamed" and out["with_config"] == "gpt-4o-mini"


async def test_schedules(published: Published) -> None:
    out = await published.script(
        PRELUDE
        + """
project = p.projects.list()[0]["id"]
agent = p.agents.create("Cron", "cron", project)["id"]
made = p.schedules.create(agent, "0 9 * * 1-5", input="go", max_steps=3, budget_cents=20)
out["made"] = made
out["all"] = [s["id"] for s in p.schedules.list()]
out["mine"] = [s["id"] for s in p.schedules.list(agent)]
out["got"] = p.schedules.get(made["id"])["cron_expression"]
out["updated"] = p.schedules.update(made["id"], cron="0 10 * * *", timezone="Europe/Paris")
out["disabled"] = p.schedules.disable(made["id"])["enabled"]
out["enabled"] = p.schedules.enable(made["id"])["enabled"]
p.schedules.delete(made["id"])
out["after"] = p.schedules.list()
print(json.dumps(out))
"""
    )
    made = out["made"]
    assert made["timezone"] == "UTC"  # the hosted default
    assert out["all"] == out["mine"] == [made["id"]] and out["got"] == "0 9 * * 1-5"
    assert out["updated"]["cron_expression"] == "0 10 * * *"
    assert out["updated"]["timezone"] == "Europe/Paris"
    assert (out["disabled"], out["enabled"], out["after"]) == (False, True, [])


async def test_webhooks_and_api_keys(published: Published) -> None:
    out = await published.script(
        PRELUDE
        + """
project = p.projects.list()[0]["id"]
agent = p.agents.create("Hooked", "hooked", project)["id"]
hook = p.webhooks.create(agent, "push", description="on push")
out["hook"] = hook
out["hooks"] = [h["id"] for h in p.webhooks.list(agent)]
p.webhooks.delete(hook["id"])
out["hooks_after"] = p.webhooks.list(agent)
key = p.api_keys.create(project, "ci")
out["key"] = key
out["keys"] = [k["id"] for k in p.api_keys.list(project)]
p.api_keys.revoke(project, key["id"])
out["revoked"] = [k for k in p.api_keys.list(project) if k["id"] == key["id"]]
print(json.dumps(out))
"""
    )
    assert out["hook"]["secret"] and out["hook"]["trigger_url"].endswith("/trigger")
    assert out["hooks"] == [out["hook"]["id"]] and out["hooks_after"] == []
    assert out["key"]["key"].startswith("cpk_") and out["key"]["id"] in out["keys"]
    assert out["revoked"][0]["revoked_at"] is not None


async def test_runs_and_client(published: Published) -> None:
    out = await published.script(
        PRELUDE
        + """
project = p.projects.list()[0]["id"]
agent = p.agents.create("Runner", "runner", project)["id"]
run = p.runs.create(agent, "hello", max_steps=5, budget_cents=100)
out["run"] = run
out["got"] = p.runs.get(run["id"])["status"]
out["listed"] = [r["id"] for r in p.runs.list()]
out["steps"] = p.runs.steps(run["id"])
out["cancelled"] = p.runs.cancel(run["id"])["status"]
c = Client()
queued = c.run(agent, "hi")
out["client_run"] = queued["status"]
out["client_status"] = c.get_status(queued["id"])["id"] == queued["id"]
out["client_steps"] = c.get_steps(queued["id"])
out["client_cancel"] = c.cancel(queued["id"])["status"]
print(json.dumps(out))
"""
    )
    run = out["run"]
    assert run["status"] == "queued" and out["got"] == "queued"
    assert out["listed"][0] == run["id"] and out["steps"] == []
    assert out["cancelled"] == "cancelled"
    assert out["client_run"] == "queued" and out["client_status"] is True
    assert out["client_steps"] == [] and out["client_cancel"] == "cancelled"


async def test_usage(published: Published) -> None:
    out = await published.script(
        PRELUDE
        + """
out["summary"] = p.usage.summary(from_date="2026-01-01", to_date="2026-12-31")
out["breakdown"] = p.usage.breakdown()
print(json.dumps(out))
"""
    )
    assert isinstance(out["summary"], dict)
    # Ours is an object (by agent, by model, by both): see docs/compatibility.md.
    assert {"by_agent", "by_model", "by_agent_model"} <= set(out["breakdown"])


async def test_rate_card_in_the_published_units(
    published: Published, api: Api, http: aiohttp.ClientSession
) -> None:
    project = await default_project(api, http)
    out = await published.script(
        PRELUDE
        + f"""
project = "{project}"
out["empty"] = p._api.get_rate_card(project)
card = {{"my-model": {{"input_cents_per_million": 300, "output_cents_per_million": 1500}}}}
out["set"] = p._api.set_rate_card(project, card)
out["read"] = p._api.get_rate_card(project)
print(json.dumps(out))
"""
    )
    assert out["empty"] == {}
    entry = out["read"]["my-model"]
    assert entry["input_cents_per_million"] == 300 and entry["output_cents_per_million"] == 1500
    # One meaning for both units: $3 and $15 per million tokens.
    assert (entry["input_per_million_usd"], entry["output_per_million_usd"]) == ("3", "15")
    assert out["set"] == out["read"]


@pytest.mark.parametrize(
    "call",
    [
        "p.batches.list()",
        "p.runs.dlq_skip('r')",
        "p._api.poll_tool_calls()",
        "p._api.login('a@b.c', 'pw')",
    ],
)
async def test_unserved_routes_say_so(published: Published, call: str) -> None:
    out = await published.script(
        PRELUDE
        + f"""
try:
    {call}
except PapayyaAPIError as exc:
    print(json.dumps([exc.status, json.loads(str(exc).split(": ", 1)[1])]))
"""
    )
    status, body = out
    assert status == 404 and body["error"]["code"] == "route_not_supported"
    assert "not supported" in body["error"]["message"]


@pytest.fixture
def no_builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Blobs under the test's directory and no image build (tests/docker builds images)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PAPAYYA_S3_BUCKET", raising=False)
    monkeypatch.setattr(BuildService, "submit", lambda self, dep_id: None)


@pytest.mark.usefixtures("no_builds")
async def test_deployments_with_the_python_runtime(published: Published) -> None:
    out = await published.script(
        PRELUDE
        + """
import io, tarfile
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    data = b"def main(x):\\n    return x\\n"
    info = tarfile.TarInfo("agent.py"); info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
project = p.projects.list()[0]["id"]
agent = p.agents.create("Shipped", "shipped", project)["id"]
made = p.deployments.create(agent, buf.getvalue())
out["made"] = made
out["got"] = p.deployments.get(made["id"])["id"]
out["listed"] = [d["id"] for d in p.deployments.list(agent)]
print(json.dumps(out))
"""
    )
    made = out["made"]
    assert made["runtime"] == "docker" and made["entrypoint"] == "agent.py"
    assert out["got"] == made["id"] and out["listed"] == [made["id"]]


async def test_projects(published: Published) -> None:
    out = await published.script(
        PRELUDE
        + """
made = p.projects.create("Team B", "team-b")
out["made"] = {k: v for k, v in made.items() if k != "api_key"}
out["listed"] = p.projects.list()
mine = out["listed"][0]["id"]
out["got"] = p.projects.get(mine)
out["updated"] = p.projects.update(mine, name="Renamed", slug="renamed")
out["theirs"] = refused(lambda: p.projects.get(made["id"]))
out["again"] = refused(lambda: p.projects.create("Team C", "team-b"))
print(json.dumps(out))
"""
    )
    assert out["made"]["slug"] == "team-b" and out["made"]["name"] == "Team B"
    assert out["got"] == out["listed"][0]
    assert (out["updated"]["name"], out["updated"]["slug"]) == ("Renamed", "renamed")
    # A key sees its own project only; a slug is unique.
    assert (out["theirs"], out["again"]) == (404, 409)


SHAPES = (
    PRELUDE
    + """
import os
s = os.environ["SUFFIX"]
project = p.projects.list()[0]["id"]
agent = p.agents.create("Shape", "shape-" + s, project)
out["agent"] = agent
out["agents"] = p.agents.list()
out["run"] = p.runs.create(agent["id"], "hi", max_steps=3, budget_cents=10)
out["runs"] = p.runs.list()
out["got"] = p.runs.get(out["run"]["id"])
out["steps"] = p.runs.steps(out["run"]["id"])
out["cancelled"] = p.runs.cancel(out["run"]["id"])
out["stream"] = list(p.runs.stream(out["run"]["id"]))
out["schedule"] = p.schedules.create(agent["id"], "0 9 * * *")
out["schedules"] = p.schedules.list(agent["id"])
out["unscheduled"] = p.schedules.delete(out["schedule"]["id"])
out["hook"] = p.webhooks.create(agent["id"], "push")
out["hooks"] = p.webhooks.list(agent["id"])
out["secret"] = p.secrets.set(project, "TOKEN_" + s.upper(), "v")
out["secrets"] = p.secrets.list(project)
out["forgotten"] = p.secrets.delete(project, "TOKEN_" + s.upper())
out["usage"] = p.usage.summary()
out["card"] = p._api.get_rate_card(project)
c = Client()
out["client_run"] = c.run(agent["id"], "hi")
out["client_steps"] = c.get_steps(out["client_run"]["id"])
out["missing"] = refused(lambda: p.runs.get("nope"))
out["resources"] = sorted(k for k, v in vars(p).items() if not k.startswith("_"))
with Papayya() as q:
    out["closed_by_with"] = q.projects.get(project)["id"] == project
print(json.dumps(out))
"""
)


def shape(value: Any) -> Any:
    """What a caller can rely on: the keys of each object and the type of each value (a list
    by its first item)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


async def test_both_clients_answer_in_one_shape(
    published_sdk: Path, api: Api, tmp_path: Path
) -> None:
    theirs = Published(published_sdk, api.url, api.key, tmp_path)
    ours = Published(our_venv(), api.url, api.key, tmp_path)
    published_out = await theirs.script(SHAPES, SUFFIX="a")
    our_out = await ours.script(SHAPES, SUFFIX="b")
    assert published_out["resources"] == our_out["resources"]
    assert "batches" in our_out["resources"] and published_out["missing"] == 404
    assert our_out["closed_by_with"] is True
    assert our_out["stream"][-1]["event"] == published_out["stream"][-1]["event"] == "terminal"
    assert our_out["stream"][-1]["data"]["status"] == "cancelled"
    for key in published_out:
        assert shape(our_out[key]) == shape(published_out[key]), key


_PUBLISHED_PATH = re.compile(r"""["'](/v1/[^"'\s?]*)""")
_PLACEHOLDER = re.compile(r"\{[^}]*\}")


def published_paths(venv: Path) -> set[str]:
    """Every API path in the published package's source (its SDK, its CLI, its runtime), with
    each ``{placeholder}`` as ``{}``."""
    (package,) = venv.glob("lib/python*/site-packages/papayya")
    found = set()
    for source in package.rglob("*.py"):
        for path in _PUBLISHED_PATH.findall(source.read_text()):
            found.add(_PLACEHOLDER.sub("{}", path.rstrip("/")))
    return found


async def test_every_route_of_the_published_package_is_served_or_refused_by_name(
    published_sdk: Path, api: Api, http: aiohttp.ClientSession
) -> None:
    from web.openapi import api as routes

    paths = published_paths(published_sdk)
    assert "/v1/runs/{}/dlq/skip" in paths and len(paths) > 30  # the scan sees them
    ours = [(re.compile("^" + _PLACEHOLDER.sub(r"[^/]+", r.path) + "$"), r) for r in routes.routes]
    for path in sorted(paths):
        matching = [route for pattern, route in ours if pattern.match(path)]
        assert matching, f"{path}: neither served nor refused as route_not_supported"
        for route in matching:
            if route.tag != "unsupported":
                continue
            url = api.url + path.replace("{}", "x")
            async with http.request(route.method, url, headers=api.headers()) as resp:
                body = await resp.json()
                assert resp.status == 404, path
                assert body["error"]["code"] == "route_not_supported", path


DIFFERENCES = (
    PRELUDE
    + """
project = p.projects.list()[0]["id"]
out["agents"] = len(p.agents.list())
try:
    out["deleted"] = p.projects.delete(project)
except PapayyaAPIError as exc:
    out["deleted"] = exc.status
print(json.dumps(out))
"""
)


async def test_the_deliberate_differences_of_our_client(
    published_sdk: Path, api: Api, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """docs/compatibility.md: our lists follow their pages (the published client reads the
    first), and a delete the server refuses raises (the published one ignores it)."""
    for n in range(55):  # more than a page (50)
        body = {"name": f"A{n}", "slug": f"a{n}"}
        async with http.post(f"{api.url}/v1/agents", json=body, headers=api.headers()) as resp:
            assert resp.status == 201
    theirs = await Published(published_sdk, api.url, api.key, tmp_path).script(DIFFERENCES)
    ours = await Published(our_venv(), api.url, api.key, tmp_path).script(DIFFERENCES)
    assert (theirs["agents"], ours["agents"]) == (50, 55)
    assert (theirs["deleted"], ours["deleted"]) == (None, 409)

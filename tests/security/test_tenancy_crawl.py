"""Tenants are isolated (docs/security.md, "Tenants"): every operation in ``/openapi.json``,
called with project B's key on project A's ids, answers exactly what a missing id answers,
writes nothing, and shows none of A's data. Generic over the spec, so a new route is crawled
without touching this file (one that takes a body needs an entry in ``BODIES``)."""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import pytest

from papayya.processruntime import ProcessRuntimePolicy
from projections.service import Projections
from tests.support.api import Api
from tests.support.serving import call, serving
from web import keys

pytestmark = pytest.mark.timeout(300)

PARAM = re.compile(r"\{(\w+)\}")
# Tenant A registers a module on the server: the operator allows the process runtime.
ALL = ProcessRuntimePolicy("all")
# A valid body for each operation that takes one, so that the answer is about the ids in the
# path and not about the body (an operation missing here fails with a message saying so).
BODIES: dict[str, Any] = {
    "post_create_key": {"name": "stolen"},
    "put_put_rate_card": {},
    "patch_patch_agent": {"name": "stolen"},
    "patch_update_project": {"name": "stolen"},
    "post_register": {"entrypoint": "/tmp/stolen.py"},
    "patch_finish_run": {"status": "completed", "output": "stolen"},
    "post_post_checkpoint": {"label": "stolen", "duration_ms": 0},
    "post_post_cost": {"label": "stolen", "cost_micro_usd": 1},
    "post_create_agent_run": {"input": "stolen"},
    "post_cancel_run": {"reason": "stolen"},
    "post_replay_run": {"from_step": 0},
    "post_resume_run": {"budget_cents": 100},
    "post_create_schedule": {"cron_expression": "0 9 * * *", "timezone": "UTC"},
    "patch_patch_schedule": {"enabled": False},
    "post_create_webhook": {"name": "stolen"},
    "post_set_secret": {"name": "STOLEN", "value": "stolen"},
    "patch_update_webhook": {"scheme": "bearer", "secret": "stolen-token-0123456789"},
}
# Ids that name nothing, or that no id could be: answered like any missing id, never a 5xx.
# (".." is left out: the client resolves it before sending.)
BAD_IDS = [
    "%00",
    "a%00b",
    "%0A",
    "x%0D%0Ay",
    "%7F",
    "%1B",
    "%C2%85",
    "%E2%80%A8",
    "x" * 300,
    "%C3%A9",
    "%F0%9F%98%80",
    "%20",
    "a%09b",
    "'%20OR%201=1--",
    "%25",
    "~",
]
STREAM_SECONDS = 0.3

AGENT = """
from papayya import agent

@agent
def secret_agent(task):
    return {"ok": True}
"""


@dataclass
class Tenant:
    key: str
    project: str
    ids: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)

    def leaks(self, text: str, sent: str) -> list[str]:
        """Which of this tenant's ids and secrets ``text`` shows (an id the caller sent
        itself may be echoed back, as in "run X not found")."""
        found = [s for s in self.secrets if s in text]
        sent = unquote(sent)  # an id sent in a path, such as "proj_…:run", is percent-encoded
        return found + [v for v in self.ids.values() if v in text and v not in sent]


async def tenant_a(api: Api, http: aiohttp.ClientSession, tmp: Path) -> Tenant:
    """Project A (the bootstrap project) with one of everything."""

    async def make(method: str, path: str, body: Any = None, status: int = 201) -> Any:
        got, answer = await call(http, api, method, path, body)
        assert got == status, (method, path, answer)
        return answer

    [project] = await make("GET", "/v1/projects", status=200)
    a = Tenant(api.key, project["id"], secrets=[api.key])
    a.ids["project"] = project["id"]
    agent = await make(
        "POST", "/v1/agents", {"name": "A secret agent", "slug": "a-secret-agent", "config": {}}
    )
    a.ids |= {"agent": agent["id"], "agent_slug": agent["slug"]}
    module = tmp / "secret_agent.py"
    module.write_text(AGENT)
    deployment = await make(
        "POST", f"/v1/agents/{agent['id']}/deployments", {"entrypoint": str(module)}
    )
    a.ids["deployment"] = deployment["id"]
    run = await make(
        "POST",
        f"/v1/agents/{agent['id']}/runs",
        {"input": {"secret": "a-run-input"}, "idempotency_key": "a-idem"},
    )
    a.ids["run"] = run["id"]
    durable = await make(
        "POST", "/v1/durable/runs", {"run_id": "a-durable-run", "agent": "a-local-agent"}
    )
    a.ids["durable_run"] = durable["run_id"]
    a.ids["durable_run_id"] = durable["id"]  # as stored: scoped to A
    await make(
        "POST",
        f"/v1/durable/runs/{a.ids['durable_run']}/checkpoints",
        {"label": "a-secret-task", "duration_ms": 1, "result": "a-task-result"},
    )
    schedule = await make(
        "POST",
        f"/v1/agents/{agent['id']}/schedules",
        {"cron_expression": "0 9 * * *", "timezone": "UTC"},
    )
    a.ids["schedule"] = schedule["id"]
    webhook = await make("POST", f"/v1/agents/{agent['id']}/webhooks", {"name": "a-hook"})
    a.ids["webhook"] = webhook["id"]
    a.secrets.append(webhook["secret"])
    key = await make("POST", f"/v1/projects/{a.project}/api-keys", {"name": "a-second"})
    a.ids["key"] = key["id"]
    a.secrets.append(key["key"])
    callback = await make("GET", "/v1/callbacks/secret", status=200)
    a.secrets.append(callback["secret"])
    await make(
        "POST", f"/v1/projects/{a.project}/secrets",
        {"name": "A_TOKEN", "value": "a-project-secret-value"}, status=200,
    )  # fmt: skip
    a.ids["secret"] = "A_TOKEN"
    a.secrets.append("a-project-secret-value")
    await make(
        "PUT",
        f"/v1/projects/{a.project}/rate-card",
        {"a-private-model": {"input_per_million_usd": "1", "output_per_million_usd": "2"}},
        status=200,
    )
    a.secrets += ["a-run-input", "a-task-result", "a-private-model", "a-local-agent"]
    return a


async def fingerprint(api: Api) -> dict[str, str]:
    """Every table's content, except when a key was last used (B's key is touched)."""
    pool = api.app[keys.STORE].pool
    tables = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    prints = {}
    for row in tables:
        name = row["tablename"]
        columns = "key_id, revoked_at" if name == "api_keys" else "t.*"
        prints[name] = await pool.fetchval(
            f"SELECT md5(coalesce(string_agg(r, ',' ORDER BY r), '')) "
            f'FROM (SELECT ({columns})::text AS r FROM "{name}" t) s'
        )
    return prints


async def request(
    http: aiohttp.ClientSession, api: Api, key: str, method: str, path: str, body: Any = None
) -> tuple[int, str, str]:
    """(status, content type, text); an event stream is read for a moment, then dropped."""
    kwargs: dict[str, Any] = {"headers": {"X-Api-Key": key}}
    if body is not None:
        kwargs["json"] = body
    async with http.request(method, api.url + path, **kwargs) as r:
        if r.content_type == "text/event-stream":
            chunks: list[bytes] = []
            try:
                async with asyncio.timeout(STREAM_SECONDS):
                    async for chunk in r.content.iter_any():
                        chunks.append(chunk)
            except TimeoutError:
                pass
            return r.status, r.content_type, b"".join(chunks).decode(errors="replace")
        return r.status, r.content_type, await r.text()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, ops in spec["paths"].items() for m, op in ops.items()]


def expected_statuses(op: dict[str, Any]) -> set[int]:
    """An API-key route answers B's key on A's ids with 404. A run-token route refuses B's
    API key itself (401); a webhook trigger, authenticated by its signature alone, answers
    an unsigned call 401, or 404 for an id that is no webhook."""
    schemes = {name for s in op.get("security", []) for name in s}
    return {404} if "apiKey" in schemes else {401, 404}


def well_formed_error(path: str, text: str) -> bool:
    import json

    body = json.loads(text)
    error = body.get("error")
    if path.startswith("/v1/llm/"):  # the gateway answers in its provider's shape
        return isinstance(error, dict) and isinstance(error.get("message"), str)
    return (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    )


async def test_another_projects_ids_are_not_found_on_every_path(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serving(dsn, monkeypatch, process_runtime=ALL) as api:
        a = await tenant_a(api, http, tmp_path)
        status, created = await call(http, api, "POST", "/v1/projects", {"name": "project-b"})
        assert status == 201
        b_key = created["api_key"]["key"]
        # The read fence trails while a transaction is open anywhere on the server (other
        # suites share it): wait until A's events are visible, then project them.
        await api.app[keys.STORE].wait_visible()
        await Projections(api.app[keys.STORE], dsn).catch_up()
        spec = (await request(http, api, b_key, "GET", "/openapi.json"))[2]
        import json

        ops = operations(json.loads(spec))
        assert len(ops) > 40
        before = await fingerprint(api)
        for kind in ("run", "agent", "schedule", "deployment"):  # and they exist, for A
            path = f"/v1/{kind}s/{a.ids[kind]}"
            assert (await request(http, api, a.key, "GET", path))[0] == 200, path
        problems: list[str] = []
        crawled = 0
        for method, path, op in ops:
            params = PARAM.findall(path)
            if not params:
                continue
            if "requestBody" in op and op["operationId"] not in BODIES:
                problems.append(f"{method} {path}: add a valid body for {op['operationId']}")
                continue
            body = BODIES.get(op["operationId"]) if "requestBody" in op else None
            wanted = expected_statuses(op)
            for values in itertools.product(a.ids.values(), repeat=len(params)):
                url = path
                for name, value in zip(params, values, strict=True):
                    url = url.replace("{" + name + "}", quote(value, safe=""))
                status, _, text = await request(http, api, b_key, method, url, body)
                crawled += 1
                if status not in wanted:
                    problems.append(f"{method} {url}: {status} (wanted {wanted}) {text[:200]}")
                elif not well_formed_error(path, text):
                    problems.append(f"{method} {url}: malformed error body {text[:200]}")
                if leaked := a.leaks(text, url):
                    problems.append(f"{method} {url}: shows A's {leaked}")
        assert not problems, "\n".join(problems)
        assert crawled > 300
        # B wrote nothing anywhere, and A's things are as they were.
        assert await fingerprint(api) == before


async def test_lists_and_feeds_show_another_project_nothing(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Every GET without a path id (lists, usage, the event feed, …), also with each of A's
    ids in each string query parameter, shows B none of A's ids or secrets."""
    async with serving(dsn, monkeypatch, process_runtime=ALL) as api:
        a = await tenant_a(api, http, tmp_path)
        status, created = await call(http, api, "POST", "/v1/projects", {"name": "project-b"})
        assert status == 201
        b_key = created["api_key"]["key"]
        # The read fence trails while a transaction is open anywhere on the server (other
        # suites share it): wait until A's events are visible, then project them.
        await api.app[keys.STORE].wait_visible()
        await Projections(api.app[keys.STORE], dsn).catch_up()
        # The check can see a leak: A's own key is shown A's things on these very routes.
        for path in ("/v1/runs", "/v1/agents", "/v1/schedules", "/v1/events"):
            assert a.leaks((await request(http, api, a.key, "GET", path))[2], ""), path
        spec = (await call(http, api, "GET", "/openapi.json"))[1]
        problems: list[str] = []
        for method, path, op in operations(spec):
            if method != "GET" or PARAM.search(path):
                continue
            queries: list[str] = [""]
            for p in op.get("parameters", []):
                if p["in"] == "query" and p["schema"].get("type") == "string":
                    queries += [f"?{p['name']}={quote(v)}" for v in a.ids.values()]
                    if p["name"] == "stream":
                        queries += [
                            f"?stream=run-{quote(a.ids[k])}"
                            for k in ("run", "durable_run", "durable_run_id")
                        ]
            for query in queries:
                status, _, text = await request(http, api, b_key, method, path + query)
                if status >= 500:
                    problems.append(f"GET {path}{query}: {status}")
                if leaked := a.leaks(text, query):
                    problems.append(f"GET {path}{query}: shows A's {leaked}")
        assert not problems, "\n".join(problems)
        # The body-borne ids of the creating routes: A's agent cannot be run by B, and A's
        # durable run id opens a run of B's own.
        for ref in (a.ids["agent"], a.ids["agent_slug"]):
            status, body = await call(http, api, "POST", "/v1/runs", {"agent_id": ref}, key=b_key)
            assert status == 404 and body["error"]["code"] == "not_found", body
        status, body = await call(
            http,
            api,
            "POST",
            "/v1/durable/runs",
            {"run_id": a.ids["durable_run"], "agent": "b-local-agent"},
            key=b_key,
        )
        assert status == 201 and body["id"] != a.ids["durable_run_id"], body
        assert body["checkpoints"] == [] and body["attempt"] == 1, body
        assert not a.leaks(str(body), a.ids["durable_run"])
        # The same idempotency key in B names a run of B's own, never A's.
        status, body = await call(
            http, api, "POST", "/v1/agents", {"name": "b", "slug": "b", "config": {}}, key=b_key
        )
        assert status == 201
        status, body = await call(
            http, api, "POST", "/v1/runs", {"agent_id": "b", "idempotency_key": "a-idem"}, key=b_key
        )
        assert status == 201 and body["id"] != a.ids["run"], body


async def test_ids_no_resource_could_have_answer_404_never_5xx(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    """Control characters (a NUL used to reach Postgres as a 500), overlong, encoded and
    odd ids, in every path parameter of every operation."""
    async with serving(dsn, monkeypatch, process_runtime=ALL) as api:
        spec = (await call(http, api, "GET", "/openapi.json"))[1]
        problems: list[str] = []
        for method, path, op in operations(spec):
            params = PARAM.findall(path)
            if not params:
                continue
            body = BODIES.get(op["operationId"]) if "requestBody" in op else None
            for bad in BAD_IDS:
                url = path
                for name in params:
                    url = url.replace("{" + name + "}", bad)
                status, content_type, text = await request(http, api, api.key, method, url, body)
                if status >= 500 or status not in (401, 404, 405):
                    problems.append(f"{method} {url}: {status} {text[:200]}")
                elif content_type != "application/json" or not well_formed_error(path, text):
                    problems.append(f"{method} {url}: malformed error {content_type} {text[:200]}")
        assert not problems, "\n".join(problems)


def _cursor(values: list[Any]) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


BAD_QUERY = [
    "%00",
    "a%00",
    "x" * 3000,
    "-1",
    "1e99",
    "99999999999999999999",
    "%FF",
    "null",
    _cursor(["\u0000", "\u0000"]),
    _cursor(["2020-01-01T00:00:00", "\u0000"]),
    _cursor([1, 2]),
    _cursor(["x"]),
    _cursor([None, None]),
    _cursor([{"a": 1}, []]),
    _cursor(["9999-99-99", "x"]),
    _cursor([10**30, 1]),
    "%%%",
]


async def test_odd_query_parameters_are_4xx_never_5xx(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    """Every query parameter of every GET, with NULs (which used to reach Postgres as a 500
    through ``agent_id`` and forged cursors), huge, malformed and forged values."""
    async with serving(dsn, monkeypatch, process_runtime=ALL) as api:
        spec = (await call(http, api, "GET", "/openapi.json"))[1]
        problems: list[str] = []
        for method, path, op in operations(spec):
            if method != "GET":
                continue
            url = PARAM.sub("nothing-here", path)
            for p in op.get("parameters", []):
                if p["in"] != "query":
                    continue
                for value in BAD_QUERY:
                    query = f"{url}?{p['name']}={value}"
                    status, _content_type, text = await request(http, api, api.key, method, query)
                    if status >= 500:
                        problems.append(f"GET {query[:100]}: {status} {text[:200]}")
                    elif status >= 400 and not well_formed_error(path, text):
                        problems.append(f"GET {query[:100]}: malformed error {text[:200]}")
        assert not problems, "\n".join(problems)

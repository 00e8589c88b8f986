"""Secrets never leak (docs/security.md, "Secrets"): after a full flow through the whole
stack (keys, an agent run through the gateway on the fake provider, a signed webhook, a
callback, every read endpoint), no provider key, API key, run token or ``whsec_`` secret is
found in any event, payload or read model, in any API answer other than the one that shows
it once, in what callbacks send, or in anything logged or printed."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fakellm import FakeConfig, Usage
from papayya import runtokens
from tests.support.agents import AGENT
from tests.support.cloud import Cloud, running_cloud
from tests.support.gateway import PROVIDER_KEY
from tests.support.serving import receiver
from tests.support.webhooks import signed
from web import keys

pytestmark = pytest.mark.timeout(180)

# The agent shows everything of its environment but its own run token: the scan then proves
# that no secret of the server's reached the agent's process.
SNOOP = """
import os
from papayya import agent

@agent
def snoop(task):
    return {"env": {k: v for k, v in os.environ.items() if not v.startswith("prt_")}}
"""
# Where a secret is kept on purpose (docs/security.md): a webhook's secret (an HMAC check
# needs it), the callback secret, the run-token secret; API keys only as hashes and prefixes.
SECRET_TABLES = {"webhooks", "project_secrets", "server_secrets"}
METRICS_TOKEN = "metrics-token-for-the-scan"


@dataclass
class Recorder:
    """Every answer the API gave, and which secrets an answer may show (shown once)."""

    cloud: Cloud
    answers: list[tuple[str, str]] = field(default_factory=list)
    shown: dict[str, set[str]] = field(default_factory=dict)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        status: int = 200,
        key: str | None = None,
        shows: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
    ) -> Any:
        headers = headers or {"X-Api-Key": key or self.cloud.key}
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.cloud.url + path, json=body, headers=headers) as r,
        ):
            text = await r.text()
            assert r.status == status, (method, path, text)
            is_json = r.content_type == "application/json"
        label = f"{method} {path} #{len(self.answers)}"
        self.answers.append((label, text))
        data = json.loads(text) if is_json else text
        for name in shows:
            self.shown.setdefault(label, set()).add(_dig(data, name))
        return data

    async def stream(self, path: str, seconds: float) -> None:
        """An event stream, read until it ends or for ``seconds``."""
        chunks: list[bytes] = []
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.cloud.url + path, headers={"X-Api-Key": self.cloud.key}) as r,
        ):
            assert r.status == 200, path
            try:
                async with asyncio.timeout(seconds):
                    async for chunk in r.content.iter_any():
                        chunks.append(chunk)
            except TimeoutError:
                pass
        self.answers.append((f"GET {path} (stream)", b"".join(chunks).decode()))


def _dig(data: Any, dotted: str) -> str:
    for part in dotted.split("."):
        data = data[part]
    return str(data)


async def stored_text(cloud: Cloud) -> list[tuple[str, str]]:
    """Every row of every table the server keeps, as text (secret tables left out)."""
    pool = cloud.app[keys.STORE].pool
    tables = [
        r["tablename"]
        for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        if r["tablename"] not in SECRET_TABLES
    ]
    assert {"events", "payloads", "runs", "steps", "api_keys", "callback_deliveries"} <= set(tables)
    rows = []
    for name in tables:
        for r in await pool.fetch(f'SELECT t::text AS row FROM "{name}" t'):
            rows.append((name, r["row"]))
    # Payloads hold bytes: scan them decoded as well.
    for r in await pool.fetch("SELECT content FROM payloads"):
        rows.append(("payloads.content", bytes(r["content"]).decode(errors="replace")))
    return rows


async def test_no_secret_is_found_in_events_answers_or_logs(
    dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeConfig(usage=Usage(prompt_tokens=100, completion_tokens=20))
    async with (
        receiver() as hook,
        running_cloud(dsn, monkeypatch, tmp_path, fake, metrics_token=METRICS_TOKEN) as cloud,
    ):
        api = Recorder(cloud)
        secrets: set[str] = {PROVIDER_KEY, cloud.key}

        # Projects and keys: each new key is shown once, in the answer that made it.
        [project] = await api.call("GET", "/v1/projects")
        other = await api.call(
            "POST", "/v1/projects", {"name": "other"}, status=201, shows=("api_key.key",)
        )
        made = await api.call(
            "POST",
            f"/v1/projects/{project['id']}/api-keys",
            {"name": "ci"},
            status=201,
            shows=("key",),
        )
        secrets |= {other["api_key"]["key"], made["key"]}
        await api.call("GET", f"/v1/projects/{project['id']}/api-keys")
        await api.call("GET", "/v1/agents", key=made["key"])  # a key in use, then revoked
        await api.call("DELETE", f"/v1/projects/{project['id']}/api-keys/{made['id']}")

        # The callback secret is what a receiver verifies with: shown to the key's holder.
        callback = await api.call("GET", "/v1/callbacks/secret", shows=("secret",))
        secrets.add(callback["secret"])

        # An agent run through the gateway (tool call, task, answer), with a callback, and
        # an agent that shows its whole environment.
        for slug, source in (("weather", AGENT), ("snoop", SNOOP)):
            module = cloud.tmp / f"{slug}.py"  # agents (another uid) can read it
            module.write_text(source)
            await api.call(
                "POST", "/v1/agents", {"name": slug, "slug": slug, "config": {}}, status=201
            )
            await api.call(
                "POST", f"/v1/agents/{slug}/deployments", {"entrypoint": str(module)}, status=201
            )
        runs = [
            (
                await api.call(
                    "POST",
                    "/v1/agents/weather/runs",
                    {
                        "input": {"question": "weather in Paris?"},
                        "callback_url": f"{hook.url}/done",
                    },
                    status=201,
                )
            )["id"],
            (await api.call("POST", "/v1/agents/snoop/runs", {}, status=201))["id"],
        ]

        # A webhook: its secret shown at creation and at rotation, and a signed trigger.
        webhook = await api.call(
            "POST", "/v1/agents/weather/webhooks", {"name": "gh"}, status=201, shows=("secret",)
        )
        rotated = await api.call(
            "POST", f"/v1/webhooks/{webhook['id']}/rotate-secret", shows=("secret",)
        )
        secrets |= {webhook["secret"], rotated["secret"]}
        body = json.dumps({"question": "weather in Oslo?"}).encode()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                webhook["trigger_url"],
                data=body,
                headers=signed(rotated["secret"], body) | {"Content-Type": "application/json"},
            ) as r,
        ):
            text = await r.text()
            assert r.status == 202, text
            api.answers.append(("POST trigger", text))
            runs.append(json.loads(text)["run_id"])
        for run_id in runs:
            run = await cloud.wait(run_id)
            assert run.status == "completed", (run_id, run.error_code, run.error_message)
            secrets.add(runtokens.mint(cloud.app[keys.RUN_TOKEN_SECRET], run_id, run.attempt))

        async def delivered() -> bool:
            return (await cloud.runs.load(runs[0])).callback_status == "delivered"

        async with asyncio.timeout(30):
            while not await delivered():
                await asyncio.sleep(0.05)
        assert cloud.fake.stats.total >= 4  # the gateway did call the provider

        # Every read: runs, steps, state, feeds, usage, and the lists of everything.
        for run_id in runs:
            for suffix in ("", "/steps", "/state"):
                await api.call("GET", f"/v1/runs/{run_id}{suffix}")
            await api.stream(f"/v1/runs/{run_id}/events", seconds=5)
        await api.call("GET", f"/v1/runs/{runs[0]}/state?at_step=1")
        await api.stream("/v1/events", seconds=1)
        for path in (
            "/v1/runs",
            "/v1/agents",
            "/v1/agents/weather",
            "/v1/usage",
            "/v1/usage/breakdown",
            "/v1/agents/weather/deployments",
            "/v1/agents/weather/webhooks",
            "/v1/schedules",
            "/v1/projects",
        ):
            await api.call("GET", path)
        await api.call("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        snooped = (await cloud.runs.load(runs[1])).output["env"]
        stored = await stored_text(cloud)

    assert snooped and not any(s in json.dumps(snooped) for s in secrets)
    assert not any(name.endswith(("_API_KEY", "DATABASE_URL", "REDIS_URL")) for name in snooped)
    assert all(s for s in secrets) and len(secrets) == 7 + len(runs)
    out, err = capfd.readouterr()
    logged = [(r.name, r.getMessage() + (r.exc_text or "")) for r in caplog.records]
    assert len(logged) > 10  # the scan did see the server's logs
    places = (
        [(f"table {name}", text) for name, text in stored]
        + [(f"answer {label}", text) for label, text in api.answers]
        + [
            (f"callback {path}", json.dumps(headers) + body.decode())
            for path, headers, body in hook.received
        ]
        + [(f"log {name}", text) for name, text in logged]
        + [("stdout", out), ("stderr", err)]
    )
    assert hook.received and any("events" in place for place, _ in places)
    leaks = [
        f"{place}: {secret[:12]}…"
        for place, text in places
        for secret in secrets | {runtokens.PREFIX}
        if secret in text and secret not in api.shown.get(place.removeprefix("answer "), set())
    ]
    assert not leaks, "\n".join(leaks)


def test_an_agent_process_gets_none_of_the_workers_secrets() -> None:
    """The process runtime passes a short list of harmless variables and those named in
    ``PAPAYYA_AGENT_ENV``, never a credential even when named there."""
    from workers.process import agent_environment

    worker = {
        "PATH": "/usr/bin",
        "PAPAYYA_OPENAI_API_KEY": PROVIDER_KEY,
        "OPENAI_API_KEY": PROVIDER_KEY,
        "PAPAYYA_DATABASE_URL": "postgresql://secret@db/x",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "GITHUB_TOKEN": "ghp_x",
        "DB_PASSWORD": "pw",
        "HOME": "/root",
        "MY_SETTING": "fine",
        "PAPAYYA_AGENT_ENV": "OPENAI_API_KEY,PAPAYYA_DATABASE_URL,AWS_SECRET_ACCESS_KEY,"
        "GITHUB_TOKEN,DB_PASSWORD,MY_SETTING",
    }
    assert agent_environment(worker) == {"PATH": "/usr/bin", "MY_SETTING": "fine"}

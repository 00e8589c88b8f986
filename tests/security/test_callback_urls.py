"""Callback URLs may not reach the server's own networks (docs/security.md, "Callbacks"):
refused at run creation (400, nothing written) and again at every delivery (a final failed
``CallbackAttempted``, never retried), unless the configuration allows them."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from papayya import urlguard
from papayya.config import Config
from papayya.domain import events as ev
from tests.support.api import Api
from tests.support.cloud import Cloud, running_cloud
from tests.support.serving import call, receiver, serving
from web import keys

pytestmark = pytest.mark.timeout(120)

REFUSED = [
    "http://127.0.0.1:8080/hook",
    "http://127.1/hook",  # legacy forms that resolve to loopback
    "http://2130706433/hook",
    "http://localhost/hook",
    "http://LOCALHOST.:9/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.1/hook",
    "https://192.168.0.10/hook",
    "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
    "http://100.64.0.1/hook",  # carrier-grade NAT
    "http://0.0.0.0:8080/hook",
    "http://[::1]:8080/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:a9fe:a9fe]/hook",  # 169.254.169.254, mapped
    "http://[fe80::1]/hook",
    "http://[fd00::1]/hook",
    "http://224.0.0.1/hook",
    "http://user:pass@127.0.0.1/hook",
    # IPv6 forms that carry a refused IPv4 address
    "http://[::127.0.0.1]/hook",  # IPv4-compatible
    "http://[::7f00:1]/hook",
    "http://[::a9fe:a9fe]/hook",
    "http://[::ffff:0:7f00:1]/hook",  # IPv4-translated
    "http://[64:ff9b::7f00:1]/hook",  # NAT64
    "http://[64:ff9b::a9fe:a9fe]/hook",
    "http://[64:ff9b:1::808:808]/hook",  # local-use NAT64
    "http://[2002:7f00:1::1]/hook",  # 6to4
    "http://[2002:a9fe:a9fe::]/hook",
]
# Parsers disagree on the host of these (WHATWG reads a backslash as a slash).
BACKSLASHED = [
    "http://evil\\@127.0.0.1/hook",
    "http://127.0.0.1\\@93.184.216.34/hook",
    "http://93.184.216.34\\@127.0.0.1/hook",
    "http:\\\\127.0.0.1/hook",
    "http:/\\127.0.0.1/hook",
]
QUICK = """
from papayya import agent

@agent
def quick(task):
    return {"ok": True}
"""


async def events_written(api: Api) -> int:
    return int(await api.app[keys.STORE].pool.fetchval("SELECT count(*) FROM events"))


async def test_private_callback_urls_are_refused_at_run_creation_and_nothing_is_written(
    api: Api, http: aiohttp.ClientSession
) -> None:
    status, _ = await call(
        http, api, "POST", "/v1/agents", {"name": "cb", "slug": "cb", "config": {}}
    )
    assert status == 201
    before = await events_written(api)
    for url in REFUSED:
        for path, body in (
            ("/v1/runs", {"agent_id": "cb", "callback_url": url}),
            ("/v1/agents/cb/runs", {"callback_url": url, "idempotency_key": "k1"}),
        ):
            status, answer = await call(http, api, "POST", path, body)
            assert status == 400, (url, answer)
            assert answer["error"]["code"] == "unsafe_callback_url", (url, answer)
            assert "PAPAYYA_CALLBACK_ALLOW_PRIVATE" in answer["error"]["message"]
    for url in BACKSLASHED:
        status, answer = await call(
            http, api, "POST", "/v1/runs", {"agent_id": "cb", "callback_url": url}
        )
        assert status == 400, (url, answer)
        assert set(answer["error"]) >= {"code", "message"}, answer
    assert await events_written(api) == before
    # A public address is accepted; so is a name that does not resolve now (its delivery
    # is checked, and fails, later).
    for url in ("https://93.184.216.34/hook", "https://callbacks.invalid/hook"):
        status, answer = await call(
            http, api, "POST", "/v1/runs", {"agent_id": "cb", "callback_url": url}
        )
        assert status == 201, answer


async def test_configuration_allows_private_callback_urls(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    assert Config.from_env({"PAPAYYA_CALLBACK_ALLOW_PRIVATE": "1"}).callback_allow_private
    assert not Config.from_env({}).callback_allow_private
    async with serving(dsn, monkeypatch, callback_allow_private=True) as api:
        status, _ = await call(
            http, api, "POST", "/v1/agents", {"name": "cb", "slug": "cb", "config": {}}
        )
        assert status == 201
        body = {"agent_id": "cb", "callback_url": "http://127.0.0.1:9/hook"}
        status, answer = await call(http, api, "POST", "/v1/runs", body)
        assert status == 201, answer


# -- delivery ---------------------------------------------------------------------------------


class FakeDns:
    """Names of the test's own: what the guard's check sees (``checked``) and what the
    connection's resolver answers (``connected``), each changeable mid-test."""

    def __init__(self) -> None:
        self.checked: dict[str, str] = {}
        self.connected: dict[str, str] = {}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_addresses = urlguard._addresses

        async def addresses(host: str, timeout: float) -> list[Any]:
            if host in self.checked:
                return [urlguard.ipaddress.ip_address(self.checked[host])]
            return await real_addresses(host, timeout)

        dns = self

        class Resolver(ThreadedResolver):
            async def resolve(
                self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
            ) -> list[ResolveResult]:
                if host in dns.connected:
                    return [
                        {
                            "hostname": host,
                            "host": dns.connected[host],
                            "port": port,
                            "family": socket.AF_INET,
                            "proto": 0,
                            "flags": 0,
                        }
                    ]
                return await super().resolve(host, port, family)

        monkeypatch.setattr(urlguard, "_addresses", addresses)
        monkeypatch.setattr(urlguard, "DefaultResolver", Resolver)


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def attempts_of(cloud: Cloud, run_id: str) -> list[ev.CallbackAttempted]:
    async def settled() -> bool:
        return (await cloud.runs.load(run_id)).callback_status in ("delivered", "failed")

    await cloud.wait(run_id)
    await wait_for(settled)
    return [e for e in await cloud.runs.events(run_id) if isinstance(e, ev.CallbackAttempted)]


async def test_a_refused_address_at_delivery_is_a_final_failed_attempt(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dns = FakeDns()
    dns.install(monkeypatch)
    async with (
        receiver() as hook,
        running_cloud(dsn, monkeypatch, tmp_path, callback_allow_private=False) as cloud,
    ):
        assert cloud.services.deliverer is not None
        cloud.services.deliverer.backoff_seconds = 0.05
        port = hook.url.rsplit(":", 1)[1]
        await cloud.register("quick", QUICK)

        # 1. The name was public when the run was created and points at loopback by the time
        # of the delivery (DNS changed): the delivery's own check refuses it.
        dns.checked["moved.example"] = "93.184.216.34"
        moved = await cloud.start("quick", callback_url=f"http://moved.example:{port}/hook")
        dns.checked["moved.example"] = "127.0.0.1"
        dns.connected["moved.example"] = "127.0.0.1"
        # 2. Both checks see a public address but the connect resolves to loopback (a rebind
        # between the check and the connect): the session's resolver refuses it.
        dns.checked["rebound.example"] = "93.184.216.34"
        dns.connected["rebound.example"] = "127.0.0.1"
        rebound = await cloud.start("quick", callback_url=f"http://rebound.example:{port}/hook")

        for run_id, reason in ((moved, "127.0.0.1"), (rebound, "refused address 127.0.0.1")):
            attempts = await attempts_of(cloud, run_id)
            assert len(attempts) == 1, attempts  # never retried
            [attempt] = attempts
            assert not attempt.delivered and attempt.final and attempt.status_code is None
            assert attempt.error is not None and reason in attempt.error, attempt.error
            assert (await cloud.runs.load(run_id)).callback_status == "failed"
        assert "refused:" in (await attempts_of(cloud, moved))[0].error  # type: ignore[operator]
        assert hook.received == []


async def test_a_callback_is_never_redirected(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        if request.path == "/hook":
            return web.Response(status=307, headers={"Location": "/elsewhere"})
        return web.Response(status=204)

    async with (
        receiver(redirect) as hook,
        running_cloud(dsn, monkeypatch, tmp_path) as cloud,  # private addresses allowed
    ):
        assert cloud.services.deliverer is not None
        cloud.services.deliverer.backoff_seconds = 0.05
        await cloud.register("quick", QUICK)
        run_id = await cloud.start("quick", callback_url=f"{hook.url}/hook")
        attempts = await attempts_of(cloud, run_id)
        assert [(a.status_code, a.delivered) for a in attempts] == [(307, False)] * 4
        assert {path for path, _, _ in hook.received} == {"/hook"}


def test_the_address_rules() -> None:
    refused = [
        "127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
        "::1",
        "::ffff:10.0.0.1",
        "fe80::1",
        "100.64.0.1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "ff02::1",
        "198.18.0.1",
    ]
    refused += ["::7f00:1", "::10.0.0.1", "::ffff:0:a00:1", "64:ff9b::a00:1", "64:ff9b:1::1"]
    refused += ["2002:a00:1::", "2002:7f00:1:5::9", "2001:0:4136:e378:8000:63bf:3fff:fdd2"]
    refused += ["fec0::1", "3fff::1", "5f00::1"]  # site-local, documentation, SRv6
    allowed = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
    allowed += ["64:ff9b::808:808", "2002:808:808::1"]  # NAT64 and 6to4 of a public address
    for text in refused:
        assert urlguard.is_refused(urlguard.ipaddress.ip_address(text)), text
    for text in allowed:
        assert not urlguard.is_refused(urlguard.ipaddress.ip_address(text)), text


async def test_a_delivery_refuses_a_name_that_resolves_to_an_embedded_ipv4(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connect's resolver judges IPv6 answers by the IPv4 address they carry."""
    answers: dict[str, str] = {}

    class Resolver(ThreadedResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            return [
                {"hostname": host, "host": answers[host], "port": port,
                 "family": socket.AF_INET6, "proto": 0, "flags": 0}
            ]  # fmt: skip

    monkeypatch.setattr(urlguard, "DefaultResolver", Resolver)
    resolver = urlguard.GuardedResolver()
    for address in ("::7f00:1", "64:ff9b::a9fe:a9fe", "2002:a00:1::1", "::ffff:0:7f00:1"):
        answers["sneaky.example"] = address
        with pytest.raises(urlguard.RefusedAddress):
            await resolver.resolve("sneaky.example", 80)
    answers["fine.example"] = "64:ff9b::808:808"
    assert [a["host"] for a in await resolver.resolve("fine.example", 80)] == ["64:ff9b::808:808"]
    await resolver.close()

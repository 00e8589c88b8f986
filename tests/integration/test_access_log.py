"""The API's access log (``web.accesslog``, ``PAPAYYA_HTTP_ACCESS_LOG``): by default one line
per request not answered 2xx, with everything an operator looks a request up by; ``all``
logs every request; a bad setting is refused before anything starts."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from tests.support.listener import listening
from web.listener import Limits


async def _lines(caplog: pytest.LogCaptureFixture, wanted: int) -> list[str]:
    """The access log's lines once there are ``wanted`` of them (written after the answer)."""
    async with asyncio.timeout(10):
        while True:
            lines = [r.getMessage() for r in caplog.records if r.name == "papayya.access"]
            if len(lines) >= wanted:
                return lines
            await asyncio.sleep(0.01)


async def _two_requests(url: str) -> None:
    """A 200, then a 404, on one connection: the first is logged (or not) before the second."""
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"{url}/healthz") as ok:
            assert ok.status == 200
        headers = {"X-Request-Id": "req-abc-123"}
        async with http.get(f"{url}/v1/no-such-thing?x=1", headers=headers) as missing:
            assert missing.status in (401, 404)


async def test_by_default_only_requests_not_answered_2xx_are_logged(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="papayya.access")
    async with listening(dsn, monkeypatch) as api:
        await _two_requests(api.url)
        lines = await _lines(caplog, 1)
    assert len(lines) == 1, lines
    remote, method, path, status, size, ms, request_id = lines[0].split(" ")
    assert (remote, method, path) == ("127.0.0.1", "GET", "/v1/no-such-thing?x=1")
    assert status in ("401", "404") and size.endswith("B") and ms.endswith("ms")
    assert request_id == "req-abc-123"


async def test_all_logs_every_request(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="papayya.access")
    async with listening(dsn, monkeypatch, Limits(access_log="all")) as api:
        await _two_requests(api.url)
        lines = await _lines(caplog, 2)
    assert [line.split(" ")[1:4] for line in lines][:1] == [["GET", "/healthz", "200"]]
    assert lines[1].split(" ")[2] == "/v1/no-such-thing?x=1"


def test_the_setting_is_checked() -> None:
    assert Limits.from_env({"PAPAYYA_HTTP_ACCESS_LOG": "off"}).access_log == "off"
    assert Limits.from_env({}).access_log == "errors"
    with pytest.raises(ValueError, match="PAPAYYA_HTTP_ACCESS_LOG must be one of"):
        Limits.from_env({"PAPAYYA_HTTP_ACCESS_LOG": "verbose"})

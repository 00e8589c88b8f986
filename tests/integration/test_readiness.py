"""``/readyz`` asks every part the process runs: here, the projectors of an API process."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.support.api import running_api


async def test_readyz_fails_when_the_projectors_of_this_process_stop(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_api(dsn, monkeypatch, projectors=True) as api,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{api.url}/readyz") as resp:
            assert resp.status == 200, await resp.text()
        (projectors,) = [t for t in asyncio.all_tasks() if t.get_name() == "projectors"]
        projectors.cancel()  # as an error it did not survive would end it
        await asyncio.gather(projectors, return_exceptions=True)
        async with http.get(f"{api.url}/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["error"]["code"] == "not_ready"
        assert body["error"]["message"].startswith("projectors: stopped")

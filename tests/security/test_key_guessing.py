"""Key guessing is rate-limited per remote address (docs/security.md, "API keys")."""

from __future__ import annotations

import aiohttp
import pytest

from papayya.config import Config
from tests.support.serving import call, serving
from web.ratelimit import AuthLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_slides_and_recently_valid_keys_pass() -> None:
    clock = Clock()
    limiter = AuthLimiter(limit=3, window=10.0, clock=clock)
    limiter.succeeded("cpk_good")
    for _ in range(3):
        assert limiter.retry_after("1.2.3.4", "cpk_wrong") is None
        limiter.failed("1.2.3.4")
        clock.now += 1
    assert limiter.retry_after("1.2.3.4", "cpk_wrong") == 7  # the first leaves at 1010
    assert limiter.retry_after("1.2.3.4", None) == 7
    assert limiter.retry_after("1.2.3.4", "cpk_good") is None
    assert limiter.retry_after("5.6.7.8", "cpk_wrong") is None  # other addresses are not touched
    clock.now += 7.5
    assert limiter.retry_after("1.2.3.4", "cpk_wrong") is None  # one failure slid out
    limiter.failed("1.2.3.4")
    assert limiter.retry_after("1.2.3.4", "cpk_wrong") is not None


def test_a_limit_of_zero_turns_it_off_and_the_defaults_come_from_the_environment() -> None:
    limiter = AuthLimiter(limit=0)
    for _ in range(100):
        limiter.failed("1.2.3.4")
    assert limiter.retry_after("1.2.3.4", "cpk_x") is None
    assert (Config().auth_failure_limit, Config().auth_failure_window_seconds) == (20, 60.0)
    env = {"PAPAYYA_AUTH_FAILURE_LIMIT": "5", "PAPAYYA_AUTH_FAILURE_WINDOW_SECONDS": "30"}
    config = Config.from_env(env)
    assert (config.auth_failure_limit, config.auth_failure_window_seconds) == (5, 30.0)


def test_memory_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("web.ratelimit.MAX_ADDRESSES", 10)
    monkeypatch.setattr("web.ratelimit.MAX_TRUSTED_KEYS", 10)
    limiter = AuthLimiter(limit=3)
    for i in range(100):
        limiter.failed(f"10.0.0.{i}")
        limiter.failed("10.0.0.0")  # the same address many times: bounded by the limit
        limiter.succeeded(f"cpk_{i}")
    assert len(limiter._failures) == 10 and len(limiter._trusted) == 10
    assert all(len(f) <= 3 for f in limiter._failures.values())


async def test_many_wrong_keys_from_one_address_get_429_and_valid_keys_are_unaffected(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    async with serving(dsn, monkeypatch, auth_failure_limit=5) as api:
        status, other = await call(http, api, "POST", "/v1/projects", {"name": "other"})
        assert status == 201
        unused_key = other["api_key"]["key"]  # valid, never used from this address
        for _ in range(30):  # no key at all guesses nothing and is not counted
            async with http.get(api.url + "/v1/agents") as r:
                assert r.status == 401
        for i in range(5):
            status, body = await call(http, api, "GET", "/v1/agents", key=f"cpk_guess_{i:020}")
            assert status == 401 and body["error"]["code"] == "unauthorized"
        for path in ("/v1/agents", "/v1/runs/run_x", "/v1/projects"):
            async with http.get(
                api.url + path, headers={"Authorization": "Bearer cpk_guess_again_000000"}
            ) as r:
                assert r.status == 429, path
                assert 1 <= int(r.headers["Retry-After"]) <= 60
                assert r.headers["X-Request-Id"]
                body = await r.json()
                assert body["error"]["code"] == "too_many_auth_failures"
        # The key in use from this address keeps working; a valid key first seen from a
        # blocked address waits like a guess would (it cannot be told apart from one).
        assert (await call(http, api, "GET", "/v1/agents"))[0] == 200
        assert (await call(http, api, "GET", "/v1/agents", key=unused_key))[0] == 429
        # Routes that take no API key are not affected.
        async with http.get(api.url + "/healthz") as r:
            assert r.status == 200
        # Another address has a budget of its own and valid keys work from it.
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as elsewhere:
            assert (await call(elsewhere, api, "GET", "/v1/agents", key=unused_key))[0] == 200
            status, _ = await call(elsewhere, api, "GET", "/v1/agents", key="cpk_guess_0000000000")
            assert status == 401

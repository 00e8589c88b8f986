"""``GET /metrics``: Prometheus exposition of the default registry. The metrics carry no run
ids, inputs or outputs, but they do describe every project (run counts, agents, spend), so
they are not public:

- on the API's port, ``/metrics`` answers only ``Authorization: Bearer <token>`` with the
  ``PAPAYYA_METRICS_TOKEN`` (else 401; failed tries count against the same limit as wrong
  API keys);
- ``PAPAYYA_METRICS_LISTEN=host:port`` serves ``/metrics`` without a token on an address of
  its own, for a scraper on a private network;
- with neither, ``/metrics`` on the API's port answers 404.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from eventstore.postgres import PostgresEventStore
from papayya.errors import InvalidInput, NotFound, RateLimited, Unauthorized
from web import keys
from web.metrics import refresh_gauges
from web.openapi import api

MIN_TOKEN_LENGTH: Final = 16
NOT_SERVED: Final = (
    "metrics are not served here: set PAPAYYA_METRICS_TOKEN (and scrape with "
    "Authorization: Bearer <token>) or PAPAYYA_METRICS_LISTEN=host:port"
)


async def _exposition(store: PostgresEventStore, request: web.Request) -> web.Response:
    await refresh_gauges(store)
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(REGISTRY), headers={"Content-Type": content_type})


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@api.route(
    "GET", "/metrics",
    "Prometheus metrics (text exposition format); needs Authorization: Bearer with "
    "PAPAYYA_METRICS_TOKEN (404 when no token is set)",
    auth="none", content_type="text/plain", tag="ops",
)  # fmt: skip
async def metrics(request: web.Request) -> web.Response:
    expected = request.app[keys.CONFIG].metrics_token
    if expected is None:
        raise NotFound(NOT_SERVED)
    token, limiter = _bearer(request), request.app[keys.AUTH_LIMITER]
    address = request.remote or "local"
    wait = limiter.retry_after(address, token)
    if wait is not None:
        raise RateLimited(f"too many requests with invalid tokens; retry in {wait} s")
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        if token is not None:
            limiter.failed(address)
        raise Unauthorized("/metrics needs Authorization: Bearer <PAPAYYA_METRICS_TOKEN>")
    limiter.succeeded(token)
    return await _exposition(request.app[keys.STORE], request)


def listen_address(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for an IPv6 host) of ``PAPAYYA_METRICS_LISTEN``."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInput(f"PAPAYYA_METRICS_LISTEN must be host:port, not {value!r}")
    return host, int(port)


def check_config(token: str | None, listen: str | None) -> None:
    """Refuse a weak metrics token or a malformed listen address before the server starts."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise InvalidInput(
            f"PAPAYYA_METRICS_TOKEN must have at least {MIN_TOKEN_LENGTH} characters"
        )
    if listen is not None:
        listen_address(listen)


async def listener_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx`` (after the store's): ``/metrics`` on ``PAPAYYA_METRICS_LISTEN``."""
    config = app[keys.CONFIG]
    if config.metrics_listen is None:
        yield
        return
    host, port = listen_address(config.metrics_listen)
    store = app[keys.STORE]

    async def serve(request: web.Request) -> web.Response:
        return await _exposition(store, request)

    own = web.Application()
    own.router.add_get("/metrics", serve)
    runner = web.AppRunner(own, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        shown = f"[{host}]" if ":" in host else host
        app[keys.METRICS_URL] = f"http://{shown}:{bound[1]}/metrics"
        yield
    finally:
        await runner.cleanup()

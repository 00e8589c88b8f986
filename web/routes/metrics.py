"""``GET /metrics``: Prometheus exposition of the default registry (no auth, like any scrape
target; the metrics carry no run ids, inputs or outputs)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from web import keys
from web.metrics import refresh_gauges
from web.openapi import api


@api.route(
    "GET", "/metrics", "Prometheus metrics (text exposition format)",
    auth="none", content_type="text/plain", tag="ops",
)  # fmt: skip
async def metrics(request: web.Request) -> web.Response:
    await refresh_gauges(request.app[keys.STORE])
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(REGISTRY), headers={"Content-Type": content_type})

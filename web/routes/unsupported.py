"""Routes of the hosted API that the published SDK and CLI call and this server does not serve.

Each answers 404 with a JSON error that names the route as unsupported, so a user of the
published SDK learns that the feature is missing here, not that an id was wrong. Project
secrets are not listed: they are served (``web/routes/secrets.py``).
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from papayya.errors import RouteNotSupported
from web.openapi import Handler, api

# (method, path, the feature it belongs to)
UNSUPPORTED: Final = (
    ("GET", "/v1/batches", "batches"),
    ("POST", "/v1/batches", "batches"),
    ("GET", "/v1/batches/{id}", "batches"),
    ("GET", "/v1/batches/{id}/runs", "batches"),
    ("GET", "/v1/batches/{id}/dlq", "the dead-letter queue"),
    ("POST", "/v1/batches/{id}/cancel", "batches"),
    ("POST", "/v1/batches/{id}/retry-failed", "batches"),
    ("POST", "/v1/runs/{id}/dlq/{action}", "the dead-letter queue"),
    ("GET", "/v1/tool-calls/pending", "the hosted tool-call bridge"),
    ("POST", "/v1/tool-calls/{id}/result", "the hosted tool-call bridge"),
    ("POST", "/v1/auth/login", "accounts (use an API key)"),
    ("POST", "/v1/auth/register", "accounts (use an API key)"),
)


def _refuse(method: str, path: str, feature: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise RouteNotSupported(
            f"{request.method} {request.path}: {feature} of the hosted Papayya API "
            "is not supported by this server"
        )

    # The OpenAPI operationId is the handler's name: one per route.
    handler.__name__ = "".join(c if c.isalnum() else "_" for c in path.lower()).strip("_")
    return handler


for _method, _path, _feature in UNSUPPORTED:
    api.route(
        _method, _path, f"Not supported here: {_feature} (404 route_not_supported)",
        auth="none", tag="unsupported",
    )(_refuse(_method, _path, _feature))  # fmt: skip

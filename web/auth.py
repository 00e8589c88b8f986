"""API-key authentication for every route declared with ``auth="api_key"``."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from papayya.errors import Unauthorized
from web import keys, tenancy


def presented_key(request: web.Request) -> str | None:
    key = request.headers.get("X-Api-Key")
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route_handler = getattr(request.match_info, "handler", None)
    if getattr(route_handler, "papayya_auth", None) == "api_key":
        key = presented_key(request)
        project = None
        if key:
            project = await tenancy.authenticate(request.app[keys.STORE].pool, key)
        if project is None:
            raise Unauthorized()
        request[keys.PROJECT_ID] = project
    return await handler(request)

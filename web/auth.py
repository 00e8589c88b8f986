"""API-key authentication for every route declared with ``auth="api_key"``, with key guessing
rate-limited per remote address (``web.ratelimit``)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from papayya.errors import InvalidInput, NotFound, Unauthorized
from web import keys
from web.middleware import error_body


def presented_key(request: web.Request) -> str | None:
    key = request.headers.get("X-Api-Key")
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return None


def _refuse_unstorable_input(request: web.Request) -> None:
    """No id holds whitespace or a control character, and a NUL would reach Postgres (which
    cannot store one) as an error: such a path names nothing, whatever the route; a NUL in
    a query parameter is bad input."""
    for value in request.match_info.values():
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise NotFound("not found")
    if any("\x00" in k or "\x00" in v for k, v in request.query.items()):
        raise InvalidInput("query parameters must not contain NUL characters")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    _refuse_unstorable_input(request)
    route_handler = getattr(request.match_info, "handler", None)
    if getattr(route_handler, "papayya_auth", None) == "api_key":
        key = presented_key(request)
        limiter = request.app[keys.AUTH_LIMITER]
        address = request.remote or "local"
        wait = limiter.retry_after(address, key)
        if wait is not None:
            message = f"too many requests with invalid API keys; retry in {wait} s"
            return web.json_response(
                error_body("too_many_auth_failures", message),
                status=429,
                headers={"Retry-After": str(wait)},
            )
        if not key:  # a request with no key at all guesses nothing
            raise Unauthorized()
        found = None
        if key.isascii():  # keys are ASCII; a header that was not UTF-8 is not one
            found = await request.app[keys.PROJECTS].authenticate(key)
        if found is None:
            limiter.failed(address)
            raise Unauthorized()
        limiter.succeeded(key)  # a valid key gets through even while its address is blocked
        request[keys.PROJECT_ID], request[keys.API_KEY_ID] = found
    return await handler(request)

"""``create_app(config)``: the fake provider as an aiohttp application.

One middleware counts and records every provider request, checks its API key and renders any
error in the provider's shape; the route modules only answer well-formed, admitted requests.
"""

from __future__ import annotations

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from fakellm import (
    admin,
    anthropic_messages,
    openai_chat,
    openai_embeddings,
    openai_responses,
)
from fakellm.config import FakeConfig
from fakellm.errors import Provider, ProviderError, error_response, provider_of, request_id
from fakellm.state import FAKE, FakeState, RecordedRequest

_OPENAI_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_NO_KEY = {"openai": _OPENAI_NO_KEY, "anthropic": "x-api-key header is required"}
_BAD_KEY = {"openai": "Incorrect API key provided.", "anthropic": "invalid x-api-key"}


def create_app(config: FakeConfig | None = None) -> web.Application:
    """The fake OpenAI + Anthropic server; its state is ``app[FAKE]``."""
    # Real prompts can be large (long histories, images): allow far more than aiohttp's 1 MiB.
    app = web.Application(middlewares=[provider_middleware], client_max_size=64 * 1024**2)
    app[FAKE] = FakeState(config or FakeConfig())
    for module in (openai_chat, openai_responses, openai_embeddings, anthropic_messages, admin):
        app.add_routes(module.routes)
    app.on_response_prepare.append(_stamp_request_id)
    return app


@web.middleware
async def provider_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/_fake/"):
        return await handler(request)
    fake = request.app[FAKE]
    provider = provider_of(request.path)
    record = await _record(request, provider)
    fake.stats.record(record)
    try:
        _authenticate(provider, record.api_key, fake.config.api_keys)
        response = await handler(request)
    except ProviderError as exc:
        response = error_response(provider, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(provider, ProviderError(exc.status, _unrouted(request, exc)))
    fake.stats.answered(record, response.status)
    return response


async def _record(request: web.Request, provider: Provider) -> RecordedRequest:
    body: object = None
    if request.can_read_body:
        raw = await request.read()
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            body = raw.decode(errors="replace")
    fields = body if isinstance(body, dict) else {}
    model = fields.get("model")
    return RecordedRequest(
        method=request.method,
        path=request.path,
        model=model if isinstance(model, str) else None,
        stream=fields.get("stream") is True,
        api_key=_api_key(request, provider),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
    )


def _api_key(request: web.Request, provider: Provider) -> str | None:
    if provider == "anthropic" and request.headers.get("x-api-key"):
        return request.headers["x-api-key"]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def _authenticate(provider: Provider, key: str | None, accepted: list[str] | None) -> None:
    if key is None:
        raise ProviderError(401, _NO_KEY[provider])
    if accepted is not None and key not in accepted:
        raise ProviderError(401, _BAD_KEY[provider], code="invalid_api_key")


def _unrouted(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"Invalid URL ({request.method} {request.path})"
    return exc.reason


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    header = "request-id" if provider_of(request.path) == "anthropic" else "x-request-id"
    response.headers.setdefault(header, request_id())

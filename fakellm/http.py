"""JSON in and out, with the providers' answers to a body that is not a JSON object."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from fakellm.errors import ProviderError, provider_of

_OPENAI_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (aiohttp caches the raw body, so reading twice is cheap)."""
    raw = await request.read()
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        if provider_of(request.path) == "anthropic":
            raise ProviderError(400, f"There was an error parsing the body: {exc}") from exc
        raise ProviderError(400, _OPENAI_BAD_JSON) from exc
    if not isinstance(body, dict):
        raise ProviderError(400, "The request body must be a JSON object.")
    return body


def json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )

"""The LLM gateway (DESIGN §7): OpenAI- and Anthropic-shaped routes, authenticated by a run
token, metered by ``papayya.metering``. Provider keys stay here; agents never see them."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Annotated, Any

import aiohttp
import msgspec
from aiohttp import web

from papayya import runtokens
from papayya.errors import InvalidInput
from papayya.metering import providers as pv
from papayya.metering.meter import Meter, MeteredResponse
from papayya.metering.ratecards import RateCardCache
from papayya.metering.upstreams import call_timeout, upstreams_from_env
from papayya.pricing import PriceStr, RateCardEntry
from web import http, keys
from web.openapi import api
from web.routes.projects import own_project


async def gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[keys.STORE]
    timeout = aiohttp.ClientTimeout(total=call_timeout(), sock_connect=10)
    session = aiohttp.ClientSession(timeout=timeout)
    cards = RateCardCache.of(store)
    app[keys.RATE_CARDS] = cards
    app[keys.RUN_TOKEN_SECRET] = await app[keys.SECRETS].server()
    app[keys.METER] = Meter(store, session, upstreams_from_env(), cards, runs=app[keys.RUNS])
    yield
    await session.close()


def _token(request: web.Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _error(provider: pv.Provider, status: int, code: str, message: str) -> web.Response:
    body = pv.error_body(provider, status, code, message)
    return web.json_response(body, status=status, headers={"x-should-retry": "false"})


async def _serve(request: web.Request, provider: pv.Provider) -> web.StreamResponse:
    # The signature is checked here; whether the run is running in the token's attempt is
    # checked by the meter against the run state it refreshes anyway (one read, not two).
    found = runtokens.verify(request.app[keys.RUN_TOKEN_SECRET], _token(request))
    if found is None:
        message = "invalid or expired run token (it works only while its run is running)"
        return _error(provider, 401, "authentication_error", message)
    run_id, attempt = found
    try:
        raw = await http.read_body(request)
    except InvalidInput as exc:  # a bad gzip body, or one over the size limit
        return _error(provider, exc.http_status, "invalid_request_error", exc.message)
    meter = request.app[keys.METER]
    route = request.match_info["route"]
    result = await meter.call(run_id, provider, route, raw, attempt=attempt)
    return await _respond(request, result)


async def _respond(request: web.Request, result: MeteredResponse) -> web.StreamResponse:
    if result.stream is None:
        return web.Response(status=result.status, body=result.body, headers=result.headers)
    response = web.StreamResponse(status=result.status, headers=result.headers)
    await response.prepare(request)
    # Closing the stream settles the call at once, also when the caller went away.
    async with contextlib.aclosing(result.stream) as stream:
        try:
            async for chunk in stream:
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:
            # The caller hung up: mid-stream (the call is settled as cut short), or right
            # after the last event, as a synchronous SDK does. Not an error of ours.
            pass
    return response


@api.route(
    "POST", "/v1/llm/openai/{route:.+}",
    "OpenAI-compatible gateway (chat/completions, responses, embeddings); run-token auth",
    auth="run_token", tag="gateway",
)  # fmt: skip
async def openai_gateway(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "openai")


@api.route(
    "POST", "/v1/llm/anthropic/{route:.+}",
    "Anthropic-compatible gateway (v1/messages); run-token auth",
    auth="run_token", tag="gateway",
)  # fmt: skip
async def anthropic_gateway(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "anthropic")


Cents = Annotated[float, msgspec.Meta(ge=0, le=99_999_999)]


class RateCardPrice(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """A model's price, in either unit or both (they must agree): ours, USD per million
    tokens as decimal strings, or the published SDK's, cents per million tokens. A card read
    back carries both, so the published CLI's read-modify-write round trip is accepted."""

    input_per_million_usd: PriceStr | None = None
    output_per_million_usd: PriceStr | None = None
    cached_input_per_million_usd: PriceStr | None = None
    input_cents_per_million: Cents | None = None
    output_cents_per_million: Cents | None = None


def _usd(model: str, side: str, usd: str | None, cents: float | None) -> str:
    if cents is None:
        if usd is None:
            raise InvalidInput(
                f"{model}: {side}_per_million_usd or {side}_cents_per_million is required"
            )
        return usd
    from_cents = (Decimal(str(cents)) / 100).normalize()
    if usd is not None:
        # Both units sent (a card read back and written again): they must say the same.
        if Decimal(usd) != from_cents:
            raise InvalidInput(
                f"{model}: {side}_per_million_usd and {side}_cents_per_million differ"
            )
        return usd
    value = format(from_cents, "f")
    try:
        return msgspec.convert(value, PriceStr)
    except msgspec.ValidationError:
        raise InvalidInput(f"{model}: {side} price {value} has too many digits") from None


def _entry(model: str, price: RateCardPrice) -> RateCardEntry:
    return RateCardEntry(
        input_per_million_usd=_usd(
            model, "input", price.input_per_million_usd, price.input_cents_per_million
        ),
        output_per_million_usd=_usd(
            model, "output", price.output_per_million_usd, price.output_cents_per_million
        ),
        cached_input_per_million_usd=price.cached_input_per_million_usd,
    )


def _cents(usd: str) -> int | float:
    cents = Decimal(usd) * 100
    return int(cents) if cents == cents.to_integral_value() else float(cents)


def _card_out(card: Mapping[str, RateCardEntry]) -> dict[str, Any]:
    """The card as both clients read it: a bare object of models, each in both units."""
    return {
        model: {
            **msgspec.to_builtins(entry),
            "input_cents_per_million": _cents(entry.input_per_million_usd),
            "output_cents_per_million": _cents(entry.output_per_million_usd),
        }
        for model, entry in card.items()
    }


@api.route(
    "GET", "/v1/projects/{id}/rate-card",
    "The project's own prices: {model: {input_per_million_usd, output_per_million_usd, "
    "cached_input_per_million_usd?, input_cents_per_million, output_cents_per_million}}",
    response=dict[str, RateCardPrice], tag="projects",
)  # fmt: skip
async def get_rate_card(request: web.Request) -> web.Response:
    project = own_project(request)
    card = await request.app[keys.RATE_CARDS](project)
    return web.json_response(_card_out(card))


@api.route(
    "PUT", "/v1/projects/{id}/rate-card",
    "Replace the project's prices: {model: price}, each price in USD per million tokens "
    "(input_per_million_usd, output_per_million_usd, cached_input_per_million_usd?) or in "
    "cents per million tokens (input_cents_per_million, output_cents_per_million), as the "
    "published SDK sends it",
    body=dict[str, RateCardPrice], response=dict[str, RateCardPrice], tag="projects",
)  # fmt: skip
async def put_rate_card(request: web.Request) -> web.Response:
    project = own_project(request)
    prices = await http.body(request, dict[str, RateCardPrice])
    if len(prices) > 1000 or any(not m or len(m) > 200 for m in prices):
        raise InvalidInput("a rate card holds at most 1000 models with names of 1-200 characters")
    card = {model: _entry(model, price) for model, price in prices.items()}
    data: Any = msgspec.to_builtins(card)
    cards = request.app[keys.RATE_CARDS]
    await cards.cards.put(project, json.dumps(data))
    cards.forget(project)
    return web.json_response(_card_out(card))

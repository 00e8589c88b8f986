"""Prices per provider and model, and the integer cost of a call (DESIGN §6).

Prices are USD per million tokens; a dollar per million tokens is a micro-dollar per token,
so a call's cost in micro-USD is the exact sum of tokens × price, rounded up once at the end.
A project's rate card wins over the maintained ``genai-prices`` table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from importlib import metadata
from typing import Annotated, Any, Final

import msgspec

from papayya.errors import InvalidInput

PriceStr = Annotated[str, msgspec.Meta(pattern=r"^\d{1,6}(\.\d{1,9})?$")]


class RateCardEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A project's own price of a model, USD per million tokens as decimal strings."""

    input_per_million_usd: PriceStr
    output_per_million_usd: PriceStr
    cached_input_per_million_usd: PriceStr | None = None


class Tokens(msgspec.Struct, frozen=True):
    """Tokens of one call in disjoint buckets."""

    input_tokens: int = 0  # uncached input
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0  # visible output, without reasoning
    reasoning_tokens: int = 0

    @property
    def all_input(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    @property
    def all_output(self) -> int:
        return self.output_tokens + self.reasoning_tokens


class UnitPrices(msgspec.Struct, frozen=True):
    """USD per million tokens of each bucket, and where the prices came from."""

    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    output: Decimal
    reasoning: Decimal
    version: str

    def cost_micro_usd(self, usage: Tokens) -> int:
        """The exact cost, rounded up to a whole micro-dollar."""
        exact = (
            usage.input_tokens * self.input
            + usage.cached_input_tokens * self.cached_input
            + usage.cache_write_tokens * self.cache_write
            + usage.output_tokens * self.output
            + usage.reasoning_tokens * self.reasoning
        )
        return math.ceil(exact)

    @property
    def max_input(self) -> Decimal:
        """The dearest way an input token can be billed (for worst-case reservations)."""
        return max(self.input, self.cached_input, self.cache_write)

    @property
    def max_output(self) -> Decimal:
        return max(self.output, self.reasoning)


@cache
def table_version() -> str:
    return f"genai-prices {metadata.version('genai-prices')}"


def _unit(value: Any, tokens: int) -> Decimal | None:
    """A flat price, or the tier that ``tokens`` input tokens fall in (cliff pricing)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    price: Decimal = value.base
    for tier in sorted(value.tiers, key=lambda t: t.start):
        if tokens > tier.start:
            price = tier.price
    return price


def _from_table(provider: str, model: str, input_tokens: int) -> UnitPrices | None:
    from genai_prices import data_snapshot

    try:
        _provider, info = data_snapshot.get_snapshot().find_provider_model(
            model, None, provider, None
        )
    except LookupError:
        return None
    prices = info.get_prices(datetime.now(UTC))
    base = _unit(getattr(prices, "input_mtok", None), input_tokens)
    output = _unit(getattr(prices, "output_mtok", None), input_tokens)
    if base is None:
        return None  # a model not priced per input token (images, audio…): unknown to us
    if output is None:
        output = Decimal(0)  # embeddings have no output tokens
    cached = _unit(getattr(prices, "cache_read_mtok", None), input_tokens)
    write = _unit(getattr(prices, "cache_write_mtok", None), input_tokens)
    return UnitPrices(
        input=base,
        cached_input=cached if cached is not None else base,
        cache_write=write if write is not None else base,
        output=output,
        reasoning=output,  # reasoning tokens are billed as output tokens
        version=table_version(),
    )


def table_model(provider: str, model: str) -> str | None:
    """The price table's own id for ``model`` (a dated or aliased name maps to it), or
    ``None`` if the table does not know it. The ids form a fixed set, whatever ``model`` is."""
    from genai_prices import data_snapshot

    try:
        _provider, info = data_snapshot.get_snapshot().find_provider_model(
            model, None, provider, None
        )
    except LookupError:
        return None
    return str(info.id)


def prices_for(
    provider: str,
    model: str,
    rate_card: Mapping[str, RateCardEntry] | None = None,
    input_tokens: int = 0,
) -> UnitPrices | None:
    """The prices of ``model``: the rate card's if it has one, else the table's; ``None`` if
    neither knows it. ``input_tokens`` picks the tier of tiered prices."""
    if not isinstance(model, str) or not model:
        raise InvalidInput("model must be a non-empty string")
    entry = (rate_card or {}).get(model)
    if entry is not None:
        base = Decimal(entry.input_per_million_usd)
        cached = entry.cached_input_per_million_usd
        output = Decimal(entry.output_per_million_usd)
        return UnitPrices(
            input=base,
            cached_input=Decimal(cached) if cached is not None else base,
            cache_write=base,
            output=output,
            reasoning=output,
            version="rate-card",
        )
    return _from_table(provider, model, input_tokens)


RATE_CARD_DECODER: Final = msgspec.json.Decoder(dict[str, RateCardEntry])

"""Money in integers: micro-USD inside, cents (rounded up) and exact decimal strings outside."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from papayya.errors import InvalidInput

MICRO_PER_CENT = 10_000
MICRO_PER_USD = 1_000_000


def cents_up(micro: int) -> int:
    """Integer cents, rounded up: a displayed spend never understates the real one."""
    return -(-micro // MICRO_PER_CENT)


def usd_string(micro: int) -> str:
    """The exact amount in dollars, e.g. ``"0.001234"``."""
    return f"{Decimal(micro) / MICRO_PER_USD:.6f}"


def cents_to_micro(cents: int | None) -> int | None:
    return None if cents is None else cents * MICRO_PER_CENT


def usd_to_micro(amount: Any) -> int | None:
    """Dollars (number or decimal string) to integer micro-USD, rounded down: a budget never
    grows by rounding."""
    if amount is None:
        return None
    if isinstance(amount, bool):
        raise InvalidInput("an amount of dollars must be a number")
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        raise InvalidInput("an amount of dollars must be a number") from None
    if not value.is_finite() or value < 0:
        raise InvalidInput("an amount of dollars must be finite and >= 0")
    return int(value * MICRO_PER_USD)

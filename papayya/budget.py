"""Worst-case reservations (DESIGN §6), pure.

Before a call is forwarded, the run reserves what it could cost at most: every prompt token
at the dearest input price plus the output cap at the output price. Without a cap in the
request, one is injected that the remaining budget affords. Prompt tokens are bounded by the
request's UTF-8 byte count (no tokenizer emits more tokens than bytes), so the bound holds
without downloading a tokenizer; settlement then charges what the provider reports.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Final

import msgspec

from papayya.domain.state import Amount, Budget
from papayya.pricing import UnitPrices

# Role and framing tokens a provider adds around each message, generously.
PER_MESSAGE_OVERHEAD: Final = 16
DEFAULT_OUTPUT_CAP: Final = 4096


class Reservation(msgspec.Struct, frozen=True):
    """What to hold before the call, and the output cap to enforce (``None``: keep the
    request's own cap)."""

    amount: Amount
    inject_output_cap: int | None


def prompt_token_bound(body: bytes, messages: int) -> int:
    return len(body) + PER_MESSAGE_OVERHEAD * max(messages, 1)


def reserve(
    prompt_tokens: int,
    output_cap: int | None,
    prices: UnitPrices | None,
    budget: Budget,
    held: Amount,
) -> Reservation | None:
    """The reservation for one call, or ``None`` if the remaining budget cannot afford even
    one output token. ``held`` is what the run has committed plus what it already reserved.
    ``prices`` may be ``None`` only when the run has no money budget."""
    cap = output_cap
    inject = None
    if cap is None:
        cap = _affordable_output(prompt_tokens, prices, budget, held)
        if cap is None:
            return None
        inject = cap
    cost = 0
    if prices is not None:
        worst = prompt_tokens * prices.max_input + cap * prices.max_output
        cost = math.ceil(worst)
    amount = Amount(micro_usd=cost, input_tokens=prompt_tokens, output_tokens=cap)
    if budget.exceeded_by(held + amount) is not None:
        return None
    return Reservation(amount, inject)


def _affordable_output(
    prompt_tokens: int, prices: UnitPrices | None, budget: Budget, held: Amount
) -> int | None:
    """The largest output cap (at most ``DEFAULT_OUTPUT_CAP``) every limit allows."""
    caps = [DEFAULT_OUTPUT_CAP]
    if budget.micro_usd is not None and prices is not None:
        left = Decimal(budget.micro_usd - held.micro_usd) - prompt_tokens * prices.max_input
        if prices.max_output > 0:
            caps.append(int(left // prices.max_output))
    if budget.output_tokens is not None:
        caps.append(budget.output_tokens - held.output_tokens)
    if budget.total_tokens is not None:
        caps.append(budget.total_tokens - held.total_tokens - prompt_tokens)
    cap = min(caps)
    return cap if cap >= 1 else None

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
    """What to hold before the call, and the output cap to enforce: ``inject_output_cap`` is
    the cap the provider must be sent instead of the request's own (``None``: keep the
    request's own, or none when it has none and no budget bounds the output). When set, the
    budget forced it, below what the caller asked for."""

    amount: Amount
    inject_output_cap: int | None


def prompt_token_bound(body: bytes, messages: int) -> int:
    return len(body) + PER_MESSAGE_OVERHEAD * max(messages, 1)


def bounds_output(budget: Budget, prices: UnitPrices | None) -> bool:
    """Whether some limit of ``budget`` depends on how many tokens the model writes."""
    return (
        (budget.micro_usd is not None and prices is not None)
        or budget.output_tokens is not None
        or budget.total_tokens is not None
    )


def reserve(
    prompt_tokens: int,
    output_cap: int | None,
    prices: UnitPrices | None,
    budget: Budget,
    held: Amount,
    *,
    choices: int = 1,
    clamp: bool = False,
) -> Reservation | None:
    """The reservation for one call, or ``None`` if the remaining budget cannot afford even
    one output token. ``held`` is what the run has committed plus what it already reserved.
    ``prices`` may be ``None`` only when the run has no money budget. ``choices`` answers
    are written (chat ``n``), each up to the cap. With ``clamp``, a cap the budget cannot
    afford is lowered to what it can (a field the caller must send, like Anthropic's
    ``max_tokens``, says little about how much output it wants)."""
    cap = output_cap
    inject = None
    if cap is None and bounds_output(budget, prices):
        cap = _affordable_output(prompt_tokens, prices, budget, held, choices)
        if cap is None:
            return None
        inject = cap
    amount = _amount(prompt_tokens, cap, prices, choices)
    if budget.exceeded_by(held + amount) is not None:
        if not clamp or output_cap is None:
            return None
        cap = _affordable_output(prompt_tokens, prices, budget, held, choices, output_cap)
        if cap is None:
            return None
        inject = cap
        amount = _amount(prompt_tokens, cap, prices, choices)
        if budget.exceeded_by(held + amount) is not None:
            return None
    return Reservation(amount, inject)


def exhausted(budget: Budget, committed: Amount) -> str | None:
    """The first limit that ``committed`` has reached or passed: nothing more fits."""
    for name, limit, used in (
        ("usd", budget.micro_usd, committed.micro_usd),
        ("input_tokens", budget.input_tokens, committed.input_tokens),
        ("output_tokens", budget.output_tokens, committed.output_tokens),
        ("total_tokens", budget.total_tokens, committed.total_tokens),
    ):
        if limit is not None and used >= limit:
            return name
    return None


def _amount(prompt_tokens: int, cap: int | None, prices: UnitPrices | None, choices: int) -> Amount:
    # Without a cap (and no budget that needs one) the default stands in for the output: an
    # estimate, kept should the call end without reporting its usage.
    output = (DEFAULT_OUTPUT_CAP if cap is None else cap) * choices
    cost = 0
    if prices is not None:
        cost = math.ceil(prompt_tokens * prices.max_input + output * prices.max_output)
    return Amount(micro_usd=cost, input_tokens=prompt_tokens, output_tokens=output)


def _affordable_output(
    prompt_tokens: int,
    prices: UnitPrices | None,
    budget: Budget,
    held: Amount,
    choices: int = 1,
    most: int = DEFAULT_OUTPUT_CAP,
) -> int | None:
    """The largest output cap (at most ``most``) every limit allows for ``choices`` answers."""
    caps = [most]
    if budget.micro_usd is not None and prices is not None:
        left = Decimal(budget.micro_usd - held.micro_usd) - prompt_tokens * prices.max_input
        if prices.max_output > 0:
            caps.append(int(left // (prices.max_output * choices)))
    if budget.output_tokens is not None:
        caps.append((budget.output_tokens - held.output_tokens) // choices)
    if budget.total_tokens is not None:
        caps.append((budget.total_tokens - held.total_tokens - prompt_tokens) // choices)
    cap = min(caps)
    return cap if cap >= 1 else None

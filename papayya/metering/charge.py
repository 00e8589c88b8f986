"""What a finished call counts against its run's budget (DESIGN §6), pure.

The provider's reported usage, priced; or, when no usage arrived, the reservation the call
was admitted with, its worst case. Usage above the reservation counts as reported and is
marked, since the reservation was meant to bound it.
"""

from __future__ import annotations

from dataclasses import dataclass

from papayya.domain.state import Amount
from papayya.metering.providers import CallResult
from papayya.pricing import Tokens, UnitPrices


@dataclass(frozen=True)
class Charge:
    """The usage to record (``result``), its cost, and how it came about."""

    result: CallResult
    cost: int
    estimated: bool
    over_reservation: bool

    @property
    def amount(self) -> Amount:
        tokens = self.result.tokens
        return Amount(self.cost, tokens.all_input, tokens.all_output)


def charge(
    result: CallResult | None, held: Amount, prices: UnitPrices | None, estimated: bool
) -> Charge:
    """The charge of a call whose reservation was ``held``; ``estimated``: its usage never
    arrived, so the reservation stands in for it."""
    result = result or CallResult()
    if estimated:
        tokens = Tokens(input_tokens=held.input_tokens, output_tokens=held.output_tokens)
        estimate = CallResult(tokens, result.tool_calls, usage_reported=False)
        return Charge(estimate, held.micro_usd, True, False)
    cost = prices.cost_micro_usd(result.tokens) if prices is not None else 0
    actual = Amount(cost, result.tokens.all_input, result.tokens.all_output)
    over = (
        actual.micro_usd > held.micro_usd
        or actual.input_tokens > held.input_tokens
        or actual.output_tokens > held.output_tokens
    )
    return Charge(result, cost, False, over)

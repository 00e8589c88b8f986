"""Prices, usage normalisation and worst-case reservations (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from papayya.budget import DEFAULT_OUTPUT_CAP, exhausted, prompt_token_bound, reserve
from papayya.domain.state import Amount, Budget
from papayya.errors import InvalidInput
from papayya.metering.charge import charge
from papayya.metering.providers import CallResult
from papayya.pricing import RateCardEntry, Tokens, UnitPrices, prices_for
from papayya.usage import anthropic_usage, merge_anthropic_stream, openai_usage

PRICES = UnitPrices(
    input=Decimal("2.5"),
    cached_input=Decimal("1.25"),
    cache_write=Decimal("3.125"),
    output=Decimal("10"),
    reasoning=Decimal("10"),
    version="test",
)


def test_cost_is_exact_and_rounded_up() -> None:
    # 1 token at $2.5/MTok is 2.5 micro-dollars: charged as 3.
    assert PRICES.cost_micro_usd(Tokens(input_tokens=1)) == 3
    tokens = Tokens(800, 200, 100, 400, 100)
    exact = 800 * 2.5 + 200 * 1.25 + 100 * 3.125 + 400 * 10 + 100 * 10
    assert PRICES.cost_micro_usd(tokens) == int(exact + 0.999999)


def test_table_prices_and_rate_card_override() -> None:
    table = prices_for("openai", "gpt-4o")
    assert table is not None and table.version.startswith("genai-prices")
    assert table.input == Decimal("2.5") and table.cached_input < table.input
    card = {"gpt-4o": RateCardEntry("1", "2", "0.5")}
    own = prices_for("openai", "gpt-4o", card)
    assert own is not None and own.version == "rate-card"
    assert (own.input, own.output, own.cached_input) == (1, 2, Decimal("0.5"))
    assert prices_for("openai", "no-such-model-xyz") is None
    with pytest.raises(InvalidInput):
        prices_for("openai", "")


def test_openai_counts_cached_and_reasoning_inside_totals() -> None:
    chat = openai_usage(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 400},
            "completion_tokens_details": {"reasoning_tokens": 100},
        }
    )
    assert chat == Tokens(input_tokens=600, cached_input_tokens=400, output_tokens=200,
                          reasoning_tokens=100)  # fmt: skip
    responses = openai_usage(
        {"input_tokens": 50, "output_tokens": 7, "input_tokens_details": {"cached_tokens": 10}}
    )
    assert responses == Tokens(input_tokens=40, cached_input_tokens=10, output_tokens=7)
    assert openai_usage(None) == Tokens()
    assert openai_usage({"prompt_tokens": "x"}) == Tokens()


def test_anthropic_reports_cache_apart_and_stream_output_is_cumulative() -> None:
    assert anthropic_usage(
        {"input_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5,
         "output_tokens": 9}
    ) == Tokens(20, 100, 5, 9, 0)  # fmt: skip
    start = {"input_tokens": 20, "output_tokens": 1}
    assert merge_anthropic_stream(start, {"output_tokens": 42}).output_tokens == 42


def test_reserve_injects_an_affordable_cap() -> None:
    budget = Budget(micro_usd=10_000)
    r = reserve(100, None, PRICES, budget, Amount())
    assert r is not None and r.inject_output_cap is not None
    assert r.amount.micro_usd <= 10_000
    assert reserve(100, 5000, PRICES, budget, Amount()) is None  # its own cap costs too much
    assert reserve(100, None, PRICES, budget, Amount(micro_usd=9_999)) is None
    tokens = reserve(10, None, None, Budget(output_tokens=50), Amount(output_tokens=20))
    assert tokens is not None and tokens.inject_output_cap == 30


@given(
    prompt=st.integers(0, 5000),
    cap=st.one_of(st.none(), st.integers(1, 5000)),
    limit=st.integers(0, 200_000),
    held=st.integers(0, 200_000),
    out_limit=st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_a_reservation_never_lets_spend_pass_the_limit(
    prompt: int, cap: int | None, limit: int, held: int, out_limit: int | None
) -> None:
    budget = Budget(micro_usd=limit, output_tokens=out_limit)
    r = reserve(prompt, cap, PRICES, budget, Amount(micro_usd=held))
    if r is None:
        return
    out = cap if cap is not None else r.inject_output_cap
    assert out is not None and out >= 1
    worst = PRICES.cost_micro_usd(Tokens(cache_write_tokens=prompt, output_tokens=out))
    assert held + worst <= limit
    assert out_limit is None or out <= out_limit


def test_prompt_bound_is_at_least_the_bytes() -> None:
    assert prompt_token_bound(b"x" * 100, 3) >= 100


def test_no_budget_on_output_injects_no_cap() -> None:
    r = reserve(100, None, PRICES, Budget(), Amount())
    assert r is not None and r.inject_output_cap is None
    assert r.amount.output_tokens == DEFAULT_OUTPUT_CAP  # the estimate kept for a lost usage
    only_input = reserve(100, None, None, Budget(input_tokens=1000), Amount())
    assert only_input is not None and only_input.inject_output_cap is None


def test_choices_multiply_the_output_reserved() -> None:
    r = reserve(10, 20, None, Budget(output_tokens=100), Amount(), choices=3)
    assert r is not None and r.amount.output_tokens == 60
    assert reserve(10, 20, None, Budget(output_tokens=50), Amount(), choices=3) is None
    injected = reserve(10, None, None, Budget(output_tokens=50), Amount(), choices=3)
    assert injected is not None and injected.inject_output_cap == 16
    assert injected.amount.output_tokens == 48


def test_clamp_lowers_a_cap_to_what_remains() -> None:
    budget = Budget(output_tokens=30)
    assert reserve(10, 1000, None, budget, Amount()) is None
    r = reserve(10, 1000, None, budget, Amount(), clamp=True)
    assert r is not None and r.inject_output_cap == 30 and r.amount.output_tokens == 30
    kept = reserve(10, 20, None, budget, Amount(), clamp=True)
    assert kept is not None and kept.inject_output_cap is None  # affordable: the caller's own
    assert reserve(10, 1000, None, budget, Amount(output_tokens=30), clamp=True) is None


def test_exhausted_names_a_limit_reached_or_passed() -> None:
    budget = Budget(micro_usd=100, output_tokens=10)
    assert exhausted(budget, Amount(micro_usd=99, output_tokens=9)) is None
    assert exhausted(budget, Amount(micro_usd=100)) == "usd"
    assert exhausted(budget, Amount(output_tokens=11)) == "output_tokens"
    assert exhausted(Budget(), Amount(micro_usd=10**12)) is None


def test_a_charge_is_the_usage_reported_or_else_the_reservation() -> None:
    held = Amount(micro_usd=500, input_tokens=100, output_tokens=40)
    reported = CallResult(Tokens(input_tokens=20, output_tokens=10), usage_reported=True)
    paid = charge(reported, held, PRICES, estimated=False)
    assert paid.cost == PRICES.cost_micro_usd(reported.tokens) and not paid.over_reservation
    lost = charge(None, held, PRICES, estimated=True)
    assert lost.estimated and lost.amount == held
    over = charge(CallResult(Tokens(output_tokens=41)), held, None, estimated=False)
    assert over.over_reservation and over.amount.output_tokens == 41

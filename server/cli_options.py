"""Options that several ``papayya`` commands share, each read the same way everywhere:
``--input`` (JSON only) and a budget (``--budget-usd``, or ``--budget-cents`` as an alias)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import click

from papayya.domain.bounds import MAX_BUDGET_USD

F = TypeVar("F", bound=Callable[..., Any])
CENT = Decimal("0.01")


def parse_json_input(raw: str | None, option: str = "--input") -> Any:
    """``--input`` as JSON, or a usage error (exit 2) before anything is sent: a plain word
    is not JSON, so ``--input hello`` is refused rather than guessed at (quote it as a JSON
    string: ``--input '"hello"'``)."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        shown = raw if len(raw) <= 60 else raw[:57] + "..."
        raise click.UsageError(
            f"{option} must be JSON, not {shown!r} (for text, quote it: {option} '\"text\"')"
        ) from None


class Dollars(click.ParamType[Decimal]):
    """A dollar amount: a plain decimal number from 0 to the API's bound."""

    name = "USD"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Decimal:
        if isinstance(value, Decimal):
            return value
        try:
            amount = Decimal(str(value).strip().lstrip("$"))
        except InvalidOperation:
            self.fail(f"{value!r} is not an amount of dollars, e.g. 0.50", param, ctx)
        if not amount.is_finite() or not 0 <= amount <= MAX_BUDGET_USD:
            self.fail(f"{value} is not an amount from 0 to {MAX_BUDGET_USD} dollars", param, ctx)
        return amount


def budget_options(what: str) -> Callable[[F], F]:
    """``--budget-usd`` and its alias ``--budget-cents``, given to the command as one
    ``budget_usd: Decimal | None`` (dollars). ``what`` begins the help: "This run's budget"."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, budget_cents: int | None, **kwargs: Any) -> Any:
            usd: Decimal | None = kwargs.pop("budget_usd")
            if usd is not None and budget_cents is not None:
                raise click.UsageError("give --budget-usd or --budget-cents, not both")
            if budget_cents is not None:
                usd = (Decimal(budget_cents) / 100).quantize(CENT)
            return func(*args, budget_usd=usd, **kwargs)

        cents = click.option(
            "--budget-cents", type=click.IntRange(0, MAX_BUDGET_USD * 100), default=None,
            help="The same budget in cents (--budget-cents 50 is --budget-usd 0.50).",
        )  # fmt: skip
        usd = click.option(
            "--budget-usd", type=Dollars(), default=None,
            help=f"{what}, in dollars (e.g. 0.50).",
        )  # fmt: skip
        return usd(cents(wrapper))  # type: ignore[return-value]

    return decorate


def whole_cents(usd: Decimal | None) -> int | None:
    """A budget in dollars as the cents the API takes; a fraction of a cent is refused."""
    if usd is None:
        return None
    cents = usd / CENT
    if cents != cents.to_integral_value():
        raise click.BadParameter(f"{usd} has a fraction of a cent", param_hint="'--budget-usd'")
    return int(cents)

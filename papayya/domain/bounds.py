"""The domain bounds of every number that crosses the boundary, as named msgspec types.

One module, so that a request body, a query parameter, a runtime report and a stored event all
agree on what a budget, a token count or a step number may be. msgspec checks the bounds while
it decodes (a value out of range never becomes a Python object, let alone an event), and
``/openapi.json`` shows them, since it is generated from the same types.

Two layers:

- **API bounds** (``MicroUsd``, ``Cents``, ``Tokens``, ``StepNumber``…) are what a user may ask
  for: generous, but far from anything a read model could not hold.
- **Stored bounds** (``StoredCount``, ``StoredStep``, ``StoredAttempt``) are what the read
  models' columns hold (``bigint``, ``integer``): every field of a stored event that a projector
  copies into a column is bounded by its column, so a valid event can always be projected.
  Columns that *add up* values of many events (token and cost totals) are ``numeric``, which no
  sum of such values can overflow (sql/migrations/0007_bounded_read_models.sql).

Provider usage is not the caller's to choose: ``clamp_tokens`` is the one rule for it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final

import msgspec

INT32_MAX: Final = 2**31 - 1
INT64_MAX: Final = 2**63 - 1

# Ten billion dollars: no run's budget comes near it, and in micro-USD (10**16) it leaves a
# margin of ~900x below the bigint a budget column holds.
MAX_BUDGET_USD: Final = 10**10
MAX_MICRO_USD: Final = MAX_BUDGET_USD * 1_000_000
MAX_CENTS: Final = MAX_BUDGET_USD * 100
# A trillion tokens: a token budget of a run, and the most one bucket of one model call may
# count (real calls count millions at most). Five buckets at the dearest rate-card price
# (< 10**6 micro-USD a token, papayya.pricing.PriceStr) cost < 5 * 10**18 micro-USD, so even a
# clamped absurd report is a cost a bigint holds.
MAX_TOKENS: Final = 10**12
# Steps of one run, numbered 0 .. MAX_STEPS - 1. A million checkpoints is a long batch job;
# step numbers are ``integer`` columns, so this is also far inside what they hold.
MAX_STEPS: Final = 1_000_000
# A run's time limit (``timeout_seconds``): a second to a week; 1 h when nothing sets it.
MAX_TIMEOUT_SECONDS: Final = 7 * 24 * 3600
DEFAULT_TIMEOUT_SECONDS: Final = 3600
# Durations in milliseconds: a hundred years.
MAX_MILLIS: Final = 100 * 365.25 * 24 * 3600 * 1000.0

MicroUsd = Annotated[int, msgspec.Meta(ge=0, le=MAX_MICRO_USD)]
Cents = Annotated[int, msgspec.Meta(ge=0, le=MAX_CENTS)]
Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
StepNumber = Annotated[int, msgspec.Meta(ge=0, le=MAX_STEPS - 1)]
# How many steps a run may take (``max_steps``) or where a replay starts (``from_step``, which
# may be the source's step count: replay nothing live but what comes after its last step).
StepCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_STEPS)]
FromStep = Annotated[int, msgspec.Meta(ge=0, le=MAX_STEPS)]
Millis = Annotated[float, msgspec.Meta(ge=0, le=MAX_MILLIS)]
TimeoutSeconds = Annotated[int, msgspec.Meta(ge=1, le=MAX_TIMEOUT_SECONDS)]

# What a read-model column holds: the bounds of stored events' fields.
StoredCount = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
StoredStep = Annotated[int, msgspec.Meta(ge=0, le=MAX_STEPS)]
StoredAttempt = Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX)]


def check_usd(amount: Decimal | None, name: str = "budget_usd") -> None:
    """Raise ``ValueError`` unless ``amount`` is a dollar amount the API accepts (msgspec
    cannot bound a ``Decimal`` itself; raised from ``__post_init__`` it becomes a 400)."""
    if amount is not None and not (amount.is_finite() and 0 <= amount <= MAX_BUDGET_USD):
        raise ValueError(f"{name} must be a number from 0 to {MAX_BUDGET_USD}")


def clamp_tokens(value: object) -> int:
    """A provider's token count as recorded: a positive integer, at most ``MAX_TOKENS``.

    Anything else (missing, negative, a float, a bool) counts as 0, and a count above the
    bound is recorded at the bound rather than refused: refusing would leave a call the
    provider answered unrecorded, and a bound that high is already past every budget."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return 0
    return min(value, MAX_TOKENS)

"""The duration sketch: bins from ddsketch's mapping, quantiles within its relative accuracy."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from projections.sketch import RELATIVE_ACCURACY, ZERO_BIN, bin_of, quantiles

durations = st.lists(st.floats(0, 10**9, allow_nan=False), min_size=1, max_size=200)


@given(durations, st.sampled_from([0.0, 0.25, 0.5, 0.95, 1.0]))
def test_a_quantile_is_within_the_accuracy_of_the_value_of_its_rank(
    values: list[float], q: float
) -> None:
    bins = Counter(bin_of(v) for v in values)
    found = quantiles(bins.items(), [q])
    assert found is not None
    exact = sorted(values)[int(q * (len(values) - 1))]  # DDSketch's rank: the lower one
    assert abs(found[0] - exact) <= exact * RELATIVE_ACCURACY + 1e-9


def test_zero_and_negative_durations_share_the_zero_bin_and_empty_is_none() -> None:
    assert bin_of(0.0) == bin_of(-5.0) == ZERO_BIN
    assert quantiles([(ZERO_BIN, 3)], [0.5]) == [0.0]
    assert quantiles([], [0.5]) is None
    assert quantiles([(bin_of(10.0), 0)], [0.5]) is None  # a bin emptied by moves counts nothing

"""Run durations as a DDSketch whose bins are table rows.

A DDSketch (the ``ddsketch`` package) puts each value in a logarithmic bin, so any quantile it
reports is within ``RELATIVE_ACCURACY`` of a value of the same rank, and two sketches merge by
adding their bins. Keeping the bins as rows (``run_durations``: runs per project, minute and
bin) lets the runs projector take a run back out when it ends again after a resume, which an
in-memory sketch cannot, and lets a window of minutes merge with one ``GROUP BY``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY: Final = 0.01
# Durations of 0 (and the negative ones clocks that disagree can produce) share one bin below
# every logarithmic one, as DDSketch's zero count does.
ZERO_BIN: Final = -(2**31)
_MAPPING: Final = LogarithmicMapping(RELATIVE_ACCURACY)


def bin_of(ms: float) -> int:
    """The bin of a duration in milliseconds."""
    if ms <= _MAPPING.min_possible:
        return ZERO_BIN
    return _MAPPING.key(ms)


def quantiles(bins: Iterable[tuple[int, int]], qs: Sequence[float]) -> list[float] | None:
    """The ``qs`` quantiles of the values counted in ``(bin, count)`` pairs; None if none.

    Each bin goes into a sketch as its representative value (which maps back to the same
    bin) with its count as the weight, so the quantiles are DDSketch's own: the value of the
    lower rank, never an interpolation between two values.
    """
    sketch = DDSketch(RELATIVE_ACCURACY)
    for key, count in bins:
        if count > 0:
            sketch.add(0.0 if key == ZERO_BIN else _MAPPING.value(key), float(count))
    if sketch.count == 0:
        return None
    values = [sketch.get_quantile_value(q) for q in qs]
    return [0.0 if v is None else float(v) for v in values]  # None only for an empty sketch

"""What a schedule does with the fires that came due while nobody fired them. Pure.

``catchup_policy`` (for fires found late, after downtime or a pause of the scheduler):

- ``latest`` (default): one run, for the most recent due fire; older ones are skipped as
  ``missed``;
- ``all``: a run for every due fire (the newest ``MAX_CATCHUP_RUNS``; older ones skipped);
- ``none``: only fires due less than ``grace`` ago run; older ones are skipped.

``overlap_policy`` (a fire while this schedule's previous run is still queued or running):
``skip`` (default) records the fire as skipped (``overlap``); ``allow`` starts it anyway. It
is applied by the scheduler, which knows the runs' statuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final, Literal, get_args

import msgspec

CatchupPolicy = Literal["latest", "all", "none"]
OverlapPolicy = Literal["skip", "allow"]
CATCHUP_POLICIES: Final = get_args(CatchupPolicy)
OVERLAP_POLICIES: Final = get_args(OverlapPolicy)
# A scheduler polls every second or so; a fire found later than this was missed.
DEFAULT_GRACE: Final = timedelta(seconds=60)
MAX_CATCHUP_RUNS: Final = 100


class Decision(msgspec.Struct, frozen=True):
    fire_at: datetime
    start: bool
    reason: str | None = None  # why not, when not started


def plan(
    due: Sequence[datetime],
    now: datetime,
    catchup: CatchupPolicy,
    grace: timedelta = DEFAULT_GRACE,
) -> list[Decision]:
    """A decision for each due fire (ascending, none after ``now``), in the same order."""
    if not due:
        return []
    if catchup == "latest":
        starts = {due[-1]}
    elif catchup == "all":
        starts = set(due[-MAX_CATCHUP_RUNS:])
    else:
        starts = {f for f in due if now - f <= grace}
    return [Decision(f, True) if f in starts else Decision(f, False, "missed") for f in due]

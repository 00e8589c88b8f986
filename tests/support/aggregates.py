"""The oracle of the runs' aggregates: what ``run_counts``, ``run_days``, ``run_minutes`` and
``run_durations`` must hold, computed from the ``runs`` rows the way the queries they
replaced did (group the runs by status, by UTC day and minute of ``created_at``, and the ended
ones by minute of ``completed_at``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from papayya.domain.state import TERMINAL
from projections.aggregates import ENDED, minute_of
from projections.sketch import bin_of

Rows = list[dict[str, Any]]
KEYS = {
    "run_counts": ("project_id", "agent_id", "status"),
    "run_days": ("project_id", "agent_id", "day"),
    "run_minutes": ("project_id", "minute"),
    "run_durations": ("project_id", "minute", "bin"),
}


def expected_aggregates(runs: Iterable[dict[str, Any]]) -> dict[str, Rows]:
    counts: Counter[tuple[Any, ...]] = Counter()
    days: Counter[tuple[Any, ...]] = Counter()
    minutes: dict[tuple[Any, ...], Counter[str]] = {}
    durations: Counter[tuple[Any, ...]] = Counter()
    for run in runs:
        project, agent, status = run["project_id"], run["agent_id"], run["status"]
        counts[(project, agent, status)] += 1
        days[(project, agent, run["created_at"].astimezone(UTC).date())] += 1
        minutes.setdefault((project, minute_of(run["created_at"])), Counter())["created"] += 1
        ended = run["completed_at"]
        if status in TERMINAL and ended is not None:
            minutes.setdefault((project, minute_of(ended)), Counter())[status] += 1
            if run["started_at"] is not None:
                ms = (ended - run["started_at"]).total_seconds() * 1000
                durations[(project, minute_of(ended), bin_of(ms))] += 1
    columns = ("created", *ENDED)
    return {
        "run_counts": [
            {"project_id": p, "agent_id": a, "status": s, "runs": n}
            for (p, a, s), n in sorted(counts.items())
        ],
        "run_days": [
            {"project_id": p, "agent_id": a, "day": d, "created": n}
            for (p, a, d), n in sorted(days.items())
        ],
        "run_minutes": [
            {"project_id": p, "minute": m, **{c: found[c] for c in columns}}
            for (p, m), found in sorted(minutes.items())
        ],
        "run_durations": [
            {"project_id": p, "minute": m, "bin": b, "runs": n}
            for (p, m, b), n in sorted(durations.items())
        ],
    }


def aggregates_of(tables: dict[str, Rows]) -> dict[str, Rows]:
    """The aggregate tables of a snapshot in the oracle's order (Python's, not the database
    collation's), with times in UTC."""
    out: dict[str, Rows] = {}
    for name, key in KEYS.items():
        rows = [
            {k: v.astimezone(UTC) if k == "minute" else v for k, v in row.items()}
            for row in tables[name]
        ]
        out[name] = sorted(rows, key=lambda row: tuple(row[k] for k in key))
    return out

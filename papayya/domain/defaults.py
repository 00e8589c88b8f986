"""A project's defaults for the limits a run does not state, and the one rule that applies
them: the run's own value, else its agent's, else the project's.

A new project starts at the hosted API's values (``HOSTED_BUDGET_CENTS``,
``HOSTED_MAX_STEPS``). ``None`` is "no limit", and only a project setting says it: a run
that states nothing is never silently unlimited.
"""

from __future__ import annotations

from typing import Final, TypeVar

import msgspec

from papayya.domain import bounds

HOSTED_BUDGET_CENTS: Final = 500
HOSTED_MAX_STEPS: Final = 50
T = TypeVar("T")


class ProjectDefaults(msgspec.Struct, frozen=True, kw_only=True):
    """The limits a project's runs get when neither the run nor its agent states one.

    One struct (one row of ``projects``), so that a new default is one more field here and
    one more column there."""

    budget_cents: bounds.Cents | None = HOSTED_BUDGET_CENTS
    max_steps: bounds.StepCount | None = HOSTED_MAX_STEPS


# The project setting that lifts both limits: what "unlimited" means, stated explicitly.
UNLIMITED: Final = ProjectDefaults(budget_cents=None, max_steps=None)


def resolve(run: T | None, agent: T | None, project: T | None) -> T | None:
    """The limit a run gets: its own, else its agent's, else its project's (``None``: none)."""
    if run is not None:
        return run
    return agent if agent is not None else project

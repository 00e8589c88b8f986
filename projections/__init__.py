"""Read models folded from the event store: projectors, their runner, rebuild, and the
reporting repository that reads their aggregates (``projections.reporting``)."""

from projections.costs import CostsProjector
from projections.projector import Envelope, Projector
from projections.rebuild import RebuildResult, rebuild
from projections.runner import PROJECTION_LAG, ProjectionRunner
from projections.runs import RunsProjector
from projections.service import (
    PROJECTION_NAMES,
    PROJECTORS,
    Projections,
    ProjectionStatus,
    default_projectors,
)

__all__ = [
    "PROJECTION_LAG",
    "PROJECTION_NAMES",
    "PROJECTORS",
    "CostsProjector",
    "Envelope",
    "ProjectionRunner",
    "ProjectionStatus",
    "Projections",
    "Projector",
    "RebuildResult",
    "RunsProjector",
    "default_projectors",
    "rebuild",
]

"""Transition: the run and step shapes moved to ``papayya.models`` (below ``web/``, so that
workers and the CLI import them downward). Kept for the modules that still import them from
here; import ``papayya.models`` instead."""

from papayya.models import (
    RunOut,
    StepOut,
    ToolCallOut,
    run_out,
    run_out_from_summary,
    step_out,
)

__all__ = ["RunOut", "StepOut", "ToolCallOut", "run_out", "run_out_from_summary", "step_out"]

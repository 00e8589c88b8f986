"""What a run gives back, in the published SDK's shapes: ``TaskEntry`` per finished task and
``DurableRunResult`` from ``complete()`` and ``fail()``; and ``StepContext``, what a task's
step keeps beside its result (item id, snapshots, model usage)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from papayya.wire import LlmUsage


@dataclass
class TaskEntry:
    """A finished task, with the published ``TaskEntry``'s fields."""

    label: str
    result: Any
    duration_ms: int
    completed_at: str
    item_id: str | None = None
    input_snapshot: Any = None
    output_snapshot: Any = None
    kind: str | None = None
    llm_prompt_tokens: int | None = None
    llm_completion_tokens: int | None = None
    llm_total_tokens: int | None = None
    llm_model: str | None = None
    llm_stop_reason: str | None = None
    llm_provider_shape: str | None = None
    error_category: str | None = None
    agent_version: str | None = None


@dataclass
class DurableRunResult:
    """A run's summary, as the published ``complete()`` and ``fail()`` return it."""

    run_id: str
    agent: str
    status: str
    tasks: list[TaskEntry]
    total_duration_ms: int


@dataclass(frozen=True)
class StepContext:
    """What a task's step keeps beside its result. Snapshots are JSON values already."""

    item_id: str | None = None
    input_snapshot: Any = None
    output_snapshot: Any = None
    kind: str | None = None
    llm: LlmUsage | None = None

    def meta(self) -> dict[str, Any]:
        """As the step's event metadata keeps it (the durable API's ``context``)."""
        found = {
            "item_id": self.item_id,
            "input_snapshot": self.input_snapshot,
            "output_snapshot": self.output_snapshot,
            "kind": self.kind,
            "llm": None if self.llm is None else msgspec.to_builtins(self.llm),
        }
        return {k: v for k, v in found.items() if v is not None}

    def entry_fields(self) -> dict[str, Any]:
        """The ``TaskEntry`` fields this context fills."""
        usage = self.llm
        fields: dict[str, Any] = {
            "item_id": self.item_id,
            "input_snapshot": self.input_snapshot,
            "output_snapshot": self.output_snapshot,
            "kind": self.kind,
        }
        if usage is not None:
            fields |= {
                "llm_prompt_tokens": usage.prompt_tokens,
                "llm_completion_tokens": usage.completion_tokens,
                "llm_total_tokens": usage.total_tokens,
                "llm_model": usage.model,
                "llm_stop_reason": usage.stop_reason,
                "llm_provider_shape": usage.provider_shape,
            }
        return fields


NO_CONTEXT = StepContext()

"""Where the ``process`` runtime may run agents: the operator's choice, not the tenant's.

A process-runtime agent runs on the server's own machine, next to the worker, so it is only
for code the operator trusts. ``PAPAYYA_PROCESS_RUNTIME`` says whose:

- ``off`` (the default): nobody's; uploaded bundles run in Docker;
- ``all``: every project's (a single-user laptop: ``make run`` sets it);
- ``projects:<id>,<id>``: those projects' only.

The API refuses (403) to register or deploy a process-runtime agent elsewhere, and the worker
refuses to run one, so a setting narrowed after a registration leaves no door open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

SETTING: Final = "PAPAYYA_PROCESS_RUNTIME"
_PROJECT_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


@dataclass(frozen=True)
class ProcessRuntimePolicy:
    mode: Literal["off", "all", "projects"] = "off"
    projects: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, value: str | None) -> ProcessRuntimePolicy:
        """The setting's value; ``ValueError`` names what is accepted."""
        text = (value or "").strip()
        if text in ("", "off"):
            return cls()
        if text == "all":
            return cls("all")
        if text.startswith("projects:"):
            ids = [part.strip() for part in text.removeprefix("projects:").split(",")]
            if ids and all(_PROJECT_ID.match(i) for i in ids):
                return cls("projects", frozenset(ids))
        raise ValueError(
            f"{SETTING} must be off, all or projects:<id>,<id> (project ids), not {value!r}"
        )

    def allows(self, project_id: str) -> bool:
        return self.mode == "all" or (self.mode == "projects" and project_id in self.projects)

    def refusal(self, project_id: str) -> str:
        """Why ``project_id`` may not use the process runtime, and what the operator can do."""
        return (
            f"the process runtime is not enabled for project {project_id} "
            f"({SETTING}={self.value}): deploy a bundle to run in Docker, or ask the "
            f"operator to set {SETTING}=projects:{project_id} (or all, on a single-user machine)"
        )

    @property
    def value(self) -> str:
        if self.mode == "projects":
            return "projects:" + ",".join(sorted(self.projects))
        return self.mode

    def describe(self) -> str:
        """One line for a server's start-up block."""
        if self.mode == "all":
            return (
                f"process runtime: on for every project ({SETTING}=all): agents run on this "
                "machine; for a single-user machine only"
            )
        if self.mode == "projects":
            return f"process runtime: on for {self.value.removeprefix('projects:')} ({SETTING})"
        return f"process runtime: off ({SETTING}=off): uploaded bundles run in Docker"

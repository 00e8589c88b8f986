"""What a worker asks of a runtime: start an attempt's agent, wait for it, stop it.

``process`` (``workers/process.py``) runs a registered module in a local OS process;
``docker`` runs a deployment's image in an isolated container. The worker picks one by the
deployment's ``runtime``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import asyncpg

from papayya.readmodels import deployments


@dataclass(frozen=True)
class Deployment:
    deployment_id: str
    project_id: str
    agent_id: str
    version: int
    runtime: str
    entrypoint: str
    agent_function: str | None = None
    source: str | None = None
    image: str | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record | deployments.Deployment) -> Deployment:
        return cls(
            row["deployment_id"], row["project_id"], row["agent_id"], row["version"],
            row["runtime"], row["entrypoint"], row["agent_function"], row["source"],
            row["image"],
        )  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """Per-attempt resource limits (``None``: the runtime's default, or none)."""

    memory_mb: int | None = 1024
    cpus: float | None = None
    pids: int | None = 256
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class Launch:
    """Everything a runtime needs to start one attempt of a run."""

    run_id: str
    attempt: int
    deployment: Deployment
    token: str  # the run token: the agent's only credential
    control_url: str  # the control plane over TCP (http://host:port)
    control_socket: Path | None = None  # ...and over a Unix socket, where there is one
    heartbeat_seconds: float = 15.0
    grace_seconds: float = 10.0
    limits: Limits = field(default_factory=Limits)
    scratch: Path | None = None  # a work directory of the attempt's own
    # The project's secrets (docs/security.md): put into the agent's environment, under the
    # runtime's own variables (which win). Left out of the repr: never in a log line.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)


class AgentHandle(Protocol):
    """One started attempt."""

    async def wait(self) -> int:
        """Wait for the agent to exit; its exit code (negative: killed by that signal)."""
        ...

    async def stop(self, grace: float) -> None:
        """Ask the agent to stop (SIGTERM), kill it after ``grace`` seconds, and wait."""
        ...

    def output(self) -> str:
        """The last lines the agent wrote to stdout and stderr (bounded)."""
        ...

    def lines(self) -> list[tuple[float, str]]:
        """The same lines, each with when it was read (Unix time)."""
        ...

    def counted(self) -> tuple[int, list[tuple[float, str]]]:
        """How many whole lines were read so far, and the last of them kept (``lines``
        without a partial last line): what is new since an earlier look, for the output
        the worker records while the attempt runs."""
        ...


class Runtime(Protocol):
    name: str

    async def start(self, launch: Launch) -> AgentHandle: ...

    async def close(self) -> None: ...

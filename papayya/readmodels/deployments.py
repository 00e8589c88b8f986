"""Deployments: what a worker starts for an agent's runs (DESIGN §8). A deployment is a row
and its history as events on ``deployment-<id>``, written in one transaction (``record``).
Image deployments move from ``building`` to ``ready`` or ``failed`` as their build goes; the
build's log is appended to the row and kept bounded."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import asyncpg
import msgspec

from eventstore.types import ExpectedVersion
from papayya.domain import events as ev
from papayya.errors import InvalidInput, NotFound
from papayya.readmodels import Repository
from sql import queries

Q: Final = queries("deployments.sql")
QB: Final = queries("deploy.sql")
QW: Final = queries("workers.sql")
CATEGORY: Final = "deployment"
MAX_RETRIES: Final = 10


class DeploymentOut(msgspec.Struct):
    id: str
    agent_id: str
    project_id: str
    version: int
    runtime: str
    status: str
    entrypoint: str
    agent_function: str | None
    image: str | None
    error_message: str | None
    build_log: str
    created_at: datetime
    updated_at: datetime
    # ``image`` under the hosted API's name, which the published CLI's deploy prints.
    image_ref: str | None = None


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    """A ``deployments`` row (with its agent's ``slug`` where a query joins it)."""

    deployment_id: str
    project_id: str
    agent_id: str
    version: int
    runtime: str
    status: str
    entrypoint: str
    agent_function: str | None
    source: str | None
    bundle_sha256: str | None
    image: str | None
    error_message: str | None
    build_log: str
    created_at: datetime
    updated_at: datetime
    slug: str | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Deployment:
        return cls(**dict(row))

    def __getitem__(self, column: str) -> Any:
        """A column by name, as the row it came from answered it (for code that still reads
        rows: ``workers.runtime.Deployment.from_row``, the docker tests' support)."""
        return getattr(self, column)

    def out(self) -> DeploymentOut:
        return DeploymentOut(
            self.deployment_id, self.agent_id, self.project_id, self.version, self.runtime,
            self.status, self.entrypoint, self.agent_function, self.image, self.error_message,
            self.build_log, self.created_at, self.updated_at, image_ref=self.image,
        )  # fmt: skip


def _stream(deployment_id: str) -> str:
    return f"{CATEGORY}-{deployment_id}"


class Deployments(Repository):
    """Every project's deployments; the API's reads are scoped to one project."""

    async def find(self, project_id: str, deployment_id: str) -> Deployment:
        row = await self.pool.fetchrow(Q["deployment"], project_id, deployment_id)
        if row is None:
            raise NotFound(f"deployment {deployment_id} not found")
        return Deployment.from_row(row)

    async def page(
        self, project_id: str, agent_id: str, before: int | None, limit: int
    ) -> list[Deployment]:
        """Up to ``limit`` of the agent's deployments, newest version first, below
        ``before`` (the previous page's last version)."""
        rows = await self.pool.fetch(Q["list_deployments"], project_id, agent_id, before, limit)
        return [Deployment.from_row(r) for r in rows]

    async def record(
        self,
        deployment_id: str,
        events: Sequence[ev.Event],
        expected: ExpectedVersion,
        query: str,
        *args: Any,
    ) -> Deployment:
        """Append ``events`` to the deployment's stream and run ``query`` (a block of
        ``Q``: its row's insert or update, returning the row) in one transaction."""
        new = [ev.to_new_event(e) for e in events]
        async with self.transaction(appends=True) as conn:
            await self.store.append_on(conn, _stream(deployment_id), new, expected)
            row = await conn.fetchrow(query, *args)
        if row is None:
            raise NotFound(f"deployment {deployment_id} not found")
        return Deployment.from_row(row)

    async def create(
        self, project_id: str, agent_id: str, created: ev.DeploymentCreated, status: str
    ) -> Deployment:
        """A new deployment of the agent at its next version (``created.version`` is
        replaced); ``ready`` ones get their ``DeploymentReady`` at once."""
        for _ in range(MAX_RETRIES):
            version = await self.pool.fetchval(Q["next_version"], agent_id)
            made = msgspec.structs.replace(created, version=version)
            extra: list[ev.Event] = [ev.DeploymentReady(deployment_id=made.deployment_id)]
            try:
                return await self.record(
                    made.deployment_id, [made, *(extra if status == "ready" else [])],
                    "no_stream", Q["insert_deployment"], made.deployment_id, project_id,
                    agent_id, version, made.runtime, status, made.entrypoint,
                    made.agent_function, made.source, made.bundle_sha256,
                )  # fmt: skip
            except asyncpg.UniqueViolationError:
                continue  # another deployment took this version: take the next one
        raise InvalidInput(f"agent {agent_id} is being deployed concurrently; try again")

    async def finish(self, deployment_id: str, image: str | None, error: str | None) -> None:
        """End a build: ``ready`` with its image, or ``failed`` with ``error``."""
        events: list[ev.Event] = (
            [ev.DeploymentReady(deployment_id=deployment_id, image=image)]
            if error is None
            else [ev.DeploymentFailed(deployment_id=deployment_id, error=error)]
        )
        await self.record(
            deployment_id, events, "any", Q["set_status"], deployment_id,
            "ready" if error is None else "failed", image, error,
        )  # fmt: skip

    async def ready(self, agent_id: str, version: int | None) -> Deployment | None:
        """The agent's ready deployment at ``version`` (the latest if ``None``)."""
        row = await self.pool.fetchrow(QW["deployment_for_run"], agent_id, version)
        return None if row is None else Deployment.from_row(row)

    # -- image builds ---------------------------------------------------------------------

    async def build(self, deployment_id: str) -> Deployment | None:
        """The deployment to build, with its agent's slug (the image's name)."""
        row = await self.pool.fetchrow(QB["build_row"], deployment_id)
        return None if row is None else Deployment.from_row(row)

    async def append_build_log(self, deployment_id: str, text: str, max_chars: int) -> None:
        """Add ``text`` to the build log, keeping its last ``max_chars``."""
        await self.pool.execute(Q["append_build_log"], deployment_id, text, max_chars)

    async def touch_build(self, deployment_id: str) -> None:
        """Mark the build as alive (``claim_stale`` leaves it alone)."""
        await self.pool.execute(QB["touch_build"], deployment_id)

    async def claim_stale(self, limit: int, stale_seconds: float) -> list[str]:
        """Builds untouched for ``stale_seconds`` (their builder is gone), claimed for this
        process: another claims them only once they are stale again."""
        rows = await self.pool.fetch(QB["claim_stale_builds"], limit, stale_seconds)
        return [row["deployment_id"] for row in rows]

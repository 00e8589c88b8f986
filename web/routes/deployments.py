"""Deployments: what a worker starts for an agent's runs (DESIGN §8).

A deployment is a row and its history as events on ``deployment-<id>``, written in one
transaction (``record``). The ``process`` runtime's deployments are registered here, ready at
once: a module path that workers on this machine (or sharing its filesystem) can import. That
runs code already on the server, so only projects the operator trusts may do it
(``PAPAYYA_PROCESS_RUNTIME``, ``papayya.processruntime``): others get 403.
Image deployments (``docker``) are built from an uploaded bundle and move from ``building``
to ``ready`` or ``failed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import PurePath
from typing import Annotated, Any, Final, Literal

import asyncpg
import msgspec
from aiohttp import web

from eventstore.postgres import PostgresEventStore
from eventstore.types import ExpectedVersion
from papayya.domain import events as ev
from papayya.domain.bounds import INT32_MAX
from papayya.errors import InvalidInput, NotFound, ProcessRuntimeNotAllowed
from sql import queries
from web import http, keys, tenancy
from web.openapi import api
from web.routes import agents

Q: Final = queries("deployments.sql")
CATEGORY: Final = "deployment"
MAX_RETRIES: Final = 10
# Python identifiers: the @agent function a runtime picks when a module defines several.
FunctionName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]
Entrypoint = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class RegisterDeployment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A local module for the ``process`` runtime: an absolute path to a ``.py`` file (or a
    module name importable by the workers)."""

    entrypoint: Entrypoint
    runtime: Literal["process"] = "process"
    agent_function: FunctionName | None = None


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


class DeploymentList(msgspec.Struct):
    data: list[DeploymentOut]
    next_cursor: str | None


def out(row: asyncpg.Record) -> DeploymentOut:
    return DeploymentOut(
        row["deployment_id"], row["agent_id"], row["project_id"], row["version"],
        row["runtime"], row["status"], row["entrypoint"], row["agent_function"], row["image"],
        row["error_message"], row["build_log"], row["created_at"], row["updated_at"],
    )  # fmt: skip


def _stream(deployment_id: str) -> str:
    return f"{CATEGORY}-{deployment_id}"


async def record(
    store: PostgresEventStore,
    deployment_id: str,
    events: Sequence[ev.Event],
    expected: ExpectedVersion,
    query: str,
    *args: Any,
) -> asyncpg.Record:
    """Append ``events`` to the deployment's stream and run ``query`` (its row's insert or
    update, returning the row) in one transaction."""
    new = [ev.to_new_event(e) for e in events]
    async with store.pool.acquire() as conn, conn.transaction():
        await store.append_on(conn, _stream(deployment_id), new, expected)
        row = await conn.fetchrow(query, *args)
    store.committed()
    if row is None:
        raise NotFound(f"deployment {deployment_id} not found")
    return row


async def create(
    store: PostgresEventStore, agent: agents.Agent, created: ev.DeploymentCreated, status: str
) -> asyncpg.Record:
    """A new deployment of ``agent`` at the next version (``created.version`` is replaced)."""
    for _ in range(MAX_RETRIES):
        version = await store.pool.fetchval(Q["next_version"], agent.id)
        made = msgspec.structs.replace(created, version=version)
        extra: list[ev.Event] = [ev.DeploymentReady(deployment_id=made.deployment_id)]
        try:
            return await record(
                store, made.deployment_id, [made, *(extra if status == "ready" else [])],
                "no_stream", Q["insert_deployment"], made.deployment_id, agent.project_id,
                agent.id, version, made.runtime, status, made.entrypoint, made.agent_function,
                made.source, made.bundle_sha256,
            )  # fmt: skip
        except asyncpg.UniqueViolationError:
            continue  # another deployment took this version: take the next one
    raise InvalidInput(f"agent {agent.id} is being deployed concurrently; try again")


FORBIDDEN: Final = "the process runtime is not enabled for the project (PAPAYYA_PROCESS_RUNTIME)"


def require_process_runtime(request: web.Request, project_id: str) -> None:
    """403 unless the operator lets ``project_id`` run agents as local processes."""
    policy = request.app[keys.CONFIG].process_runtime
    if not policy.allows(project_id):
        raise ProcessRuntimeNotAllowed(policy.refusal(project_id))


def _check_entrypoint(entrypoint: str) -> None:
    if entrypoint.endswith(".py"):
        if not PurePath(entrypoint).is_absolute():
            raise InvalidInput("entrypoint must be an absolute path to a .py file")
    elif not all(part.isidentifier() for part in entrypoint.split(".")):
        raise InvalidInput("entrypoint must be an absolute .py path or a dotted module name")


@api.route(
    "POST", "/v1/agents/{id}/deployments",
    "Register a module on the server as the agent's next deployment (runtime process); ready "
    "at once. 403 unless PAPAYYA_PROCESS_RUNTIME allows the project",
    body=RegisterDeployment, response=DeploymentOut, status=201, tag="deployments",
    errors=((403, FORBIDDEN),),
)  # fmt: skip
async def register(request: web.Request) -> web.Response:
    req = await http.body(request, RegisterDeployment)
    _check_entrypoint(req.entrypoint)
    store = request.app[keys.STORE]
    agent = await agents.find(store.pool, http.project_id(request), http.path_id(request))
    require_process_runtime(request, agent.project_id)
    created = ev.DeploymentCreated(
        deployment_id=tenancy.new_id("dep"), project_id=agent.project_id, agent_id=agent.id,
        version=1, runtime=req.runtime, entrypoint=req.entrypoint,
        agent_function=req.agent_function, source=req.entrypoint,
    )  # fmt: skip
    row = await create(store, agent, created, "ready")
    return http.json(out(row), 201)


@api.route(
    "GET", "/v1/agents/{id}/deployments", "The agent's deployments, newest version first",
    response=DeploymentList, query=(("limit", "integer"), ("cursor", "string")),
    tag="deployments",
)  # fmt: skip
async def list_deployments(request: web.Request) -> web.Response:
    limit = http.limit(request)
    pool = request.app[keys.STORE].pool
    agent = await agents.find(pool, http.project_id(request), http.path_id(request))
    values = http.decode_cursor(request)
    if values is not None and not (
        len(values) == 1
        and isinstance(values[0], int)
        and not isinstance(values[0], bool)
        and 0 <= values[0] <= INT32_MAX  # the version column is an integer
    ):
        raise InvalidInput("cursor is not one this API issued")
    before = None if values is None else values[0]
    rows = await pool.fetch(Q["list_deployments"], agent.project_id, agent.id, before, limit + 1)
    cursor = http.encode_cursor([rows[limit - 1]["version"]]) if len(rows) > limit else None
    return http.json(DeploymentList([out(r) for r in rows[:limit]], cursor))


@api.route(
    "GET", "/v1/deployments/{id}", "A deployment: status, version, image, build log",
    response=DeploymentOut, tag="deployments",
)  # fmt: skip
async def get_deployment(request: web.Request) -> web.Response:
    ref = http.path_id(request)
    row = await request.app[keys.STORE].pool.fetchrow(
        Q["deployment"], http.project_id(request), ref
    )
    if row is None:
        raise NotFound(f"deployment {ref} not found")
    return http.json(out(row))

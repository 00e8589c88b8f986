"""Deployments over HTTP: what a worker starts for an agent's runs (DESIGN §8). The rows,
their events and queries belong to the ``Deployments`` repository.

The ``process`` runtime's deployments are registered here, ready at
once: a module path that workers on this machine (or sharing its filesystem) can import. That
runs code already on the server, so only projects the operator trusts may do it
(``PAPAYYA_PROCESS_RUNTIME``, ``papayya.processruntime``): others get 403.
Image deployments (``docker``) are built from an uploaded bundle and move from ``building``
to ``ready`` or ``failed``.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Final, Literal

import msgspec
from aiohttp import web

from papayya.domain import events as ev
from papayya.domain.bounds import INT32_MAX
from papayya.errors import InvalidInput, ProcessRuntimeNotAllowed
from papayya.readmodels.deployments import DeploymentOut
from papayya.readmodels.projects import new_id
from web import http, keys
from web.openapi import api

# Python identifiers: the @agent function a runtime picks when a module defines several.
FunctionName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]
Entrypoint = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class RegisterDeployment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A local module for the ``process`` runtime: an absolute path to a ``.py`` file (or a
    module name importable by the workers)."""

    entrypoint: Entrypoint
    runtime: Literal["process"] = "process"
    agent_function: FunctionName | None = None


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
    agent = await request.app[keys.AGENTS].find(http.project_id(request), http.path_id(request))
    require_process_runtime(request, agent.project_id)
    created = ev.DeploymentCreated(
        deployment_id=new_id("dep"), project_id=agent.project_id, agent_id=agent.id,
        version=1, runtime=req.runtime, entrypoint=req.entrypoint,
        agent_function=req.agent_function, source=req.entrypoint,
    )  # fmt: skip
    made = await request.app[keys.DEPLOYMENTS].create(agent.project_id, agent.id, created, "ready")
    return http.json(made.out(), 201)


@api.route(
    "GET", "/v1/agents/{id}/deployments", "The agent's deployments, newest version first",
    response=list[DeploymentOut], query=(("limit", "integer"), ("cursor", "string")),
    tag="deployments",
)  # fmt: skip
async def list_deployments(request: web.Request) -> web.Response:
    limit = http.limit(request)
    agent = await request.app[keys.AGENTS].find(http.project_id(request), http.path_id(request))
    values = http.decode_cursor(request)
    if values is not None and not (
        len(values) == 1
        and isinstance(values[0], int)
        and not isinstance(values[0], bool)
        and 0 <= values[0] <= INT32_MAX  # the version column is an integer
    ):
        raise InvalidInput("cursor is not one this API issued")
    before = None if values is None else values[0]
    found = await request.app[keys.DEPLOYMENTS].page(agent.project_id, agent.id, before, limit + 1)
    cursor = http.encode_cursor([found[limit - 1].version]) if len(found) > limit else None
    return http.page(request, [d.out() for d in found[:limit]], cursor)


@api.route(
    "GET", "/v1/deployments/{id}", "A deployment: status, version, image, build log",
    response=DeploymentOut, tag="deployments",
)  # fmt: skip
async def get_deployment(request: web.Request) -> web.Response:
    found = await request.app[keys.DEPLOYMENTS].find(
        http.project_id(request), http.path_id(request)
    )
    return http.json(found.out())

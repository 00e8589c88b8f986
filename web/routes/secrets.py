"""Project secrets, as the published SDK's ``secrets.set/list/delete`` call them: values the
project's agents find in their environment. A value is sealed at once (docs/security.md) and
never shown again; lists show names only. A key sees only its own project's: any other
project id answers 404."""

from __future__ import annotations

from datetime import datetime

import msgspec
from aiohttp import web

from papayya.readmodels.projectsecrets import SecretName
from web import http, keys
from web.openapi import api
from web.routes.projects import own_project


class SetSecret(msgspec.Struct, forbid_unknown_fields=True):
    """``name`` becomes an environment variable of the project's agents (no ``=``, no
    control characters, not ``PAPAYYA_…``); ``value`` at most 64 KiB, no NUL."""

    name: str
    value: str


class SecretOut(msgspec.Struct):
    name: str
    created_at: datetime
    updated_at: datetime


def _out(found: SecretName) -> SecretOut:
    return SecretOut(found.name, found.created_at, found.updated_at)


@api.route(
    "POST", "/v1/projects/{id}/secrets",
    "Set a project secret (replacing one of that name): the project's agents find it in "
    "their environment at their next start; its value is never shown again",
    body=SetSecret, response=SecretOut, tag="secrets",
)  # fmt: skip
async def set_secret(request: web.Request) -> web.Response:
    project = own_project(request)
    req = await http.body(request, SetSecret)
    return http.json(
        _out(await request.app[keys.PROJECT_SECRETS].set(project, req.name, req.value))
    )


@api.route(
    "GET", "/v1/projects/{id}/secrets", "The project's secrets, by name (never their values)",
    response=list[SecretOut], tag="secrets",
)  # fmt: skip
async def list_secrets(request: web.Request) -> web.Response:
    project = own_project(request)
    # A bare array, as the published SDK reads it.
    return http.json([_out(s) for s in await request.app[keys.PROJECT_SECRETS].names(project)])


@api.route(
    "DELETE", "/v1/projects/{id}/secrets/{name}",
    "Delete a project secret: agents started afterwards no longer get it",
    response=SecretOut, tag="secrets",
)  # fmt: skip
async def delete_secret(request: web.Request) -> web.Response:
    project = own_project(request)
    gone = await request.app[keys.PROJECT_SECRETS].delete(project, request.match_info["name"])
    return http.json(_out(gone))

"""Projects and their API keys. A key sees only its own project."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from papayya.domain import bounds
from papayya.errors import Conflict, NotFound
from papayya.readmodels.projects import ApiKey, NewApiKey, Project
from web import http, keys
from web.openapi import api

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\- ]+$")]


Slug = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
]


class CreateProject(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    slug: Slug | None = None


class PatchProject(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Fields sent replace the project's; ``slug: null`` removes the slug. The defaults are
    what runs get when neither they nor their agent state a budget or ``max_steps``; ``null``
    is no limit (a project starts at 500 cents and 50 steps)."""

    name: Name | UnsetType = UNSET
    slug: Slug | UnsetType | None = UNSET
    default_budget_cents: bounds.Cents | UnsetType | None = UNSET
    default_max_steps: bounds.StepCount | UnsetType | None = UNSET
    # Seconds a run may take when neither it nor its agent says (null: back to 3600).
    default_timeout_seconds: bounds.TimeoutSeconds | UnsetType | None = UNSET

    def default_changes(self) -> dict[str, int | None]:
        """The ``ProjectDefaults`` fields this patch sets (``None``: no limit)."""
        sent = {
            "budget_cents": self.default_budget_cents,
            "max_steps": self.default_max_steps,
        }
        return {k: v for k, v in sent.items() if not isinstance(v, UnsetType)}


class CreateKey(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class ProjectOut(msgspec.Struct, kw_only=True):
    """A project. ``default_budget_cents`` and ``default_max_steps`` are the limits of runs
    that state none (nor their agent); ``null`` is no limit."""

    id: str
    name: str
    created_at: datetime
    slug: str | None = None
    default_budget_cents: int | None
    default_max_steps: int | None
    # The time limit of runs that neither set one nor have an agent that does.
    default_timeout_seconds: int = bounds.DEFAULT_TIMEOUT_SECONDS

    @classmethod
    def of(cls, project: Project) -> ProjectOut:
        return cls(
            id=project.id,
            name=project.name,
            created_at=project.created_at,
            slug=project.slug,
            default_budget_cents=project.defaults.budget_cents,
            default_max_steps=project.defaults.max_steps,
            default_timeout_seconds=project.default_timeout_seconds
            or bounds.DEFAULT_TIMEOUT_SECONDS,
        )


class ProjectCreated(ProjectOut, kw_only=True):
    """A new project and its first API key (the key is shown only here)."""

    api_key: NewApiKey


def own_project(request: web.Request) -> str:
    """The path's project id, which must be the caller's: any other answers 404."""
    wanted = http.path_id(request)
    if wanted != http.project_id(request):
        raise NotFound(f"project {wanted} not found")
    return wanted


@api.route(
    "POST", "/v1/projects", "Create a project and its first API key",
    body=CreateProject, response=ProjectCreated, status=201, tag="projects",
)  # fmt: skip
async def create_project(request: web.Request) -> web.Response:
    req = await http.body(request, CreateProject)
    project, key = await request.app[keys.PROJECTS].create_with_key(req.name, "first", req.slug)
    out = ProjectOut.of(project)
    fields = {f: getattr(out, f) for f in out.__struct_fields__}
    return http.json(ProjectCreated(**fields, api_key=key), 201)


@api.route(
    "GET", "/v1/projects", "The caller's project", response=list[ProjectOut], tag="projects"
)  # fmt: skip
async def list_projects(request: web.Request) -> web.Response:
    p = await request.app[keys.PROJECTS].get(http.project_id(request))
    return http.page(request, [ProjectOut.of(p)])


@api.route("GET", "/v1/projects/{id}", "The caller's project", response=ProjectOut, tag="projects")
async def get_project(request: web.Request) -> web.Response:
    return http.json(ProjectOut.of(await request.app[keys.PROJECTS].get(own_project(request))))


@api.route(
    "PATCH", "/v1/projects/{id}",
    "Rename the caller's project, set its slug, or set the defaults of runs that state none: "
    "default_budget_cents, default_max_steps (null: no limit), default_timeout_seconds "
    "(null: 3600)",
    body=PatchProject, response=ProjectOut, tag="projects",
)  # fmt: skip
async def update_project(request: web.Request) -> web.Response:
    project = own_project(request)
    req = await http.body(request, PatchProject)
    name = None if isinstance(req.name, UnsetType) else req.name
    slug = None if isinstance(req.slug, UnsetType) else req.slug
    timeout = req.default_timeout_seconds
    found = await request.app[keys.PROJECTS].update(
        project, name, slug, not isinstance(req.slug, UnsetType), req.default_changes(),
        timeout_seconds=None if isinstance(timeout, UnsetType) else timeout,
        set_timeout=not isinstance(timeout, UnsetType),
    )  # fmt: skip
    return http.json(ProjectOut.of(found))


@api.route(
    "DELETE", "/v1/projects/{id}",
    "Not through the project's own key: 409 (its runs, agents and keys stay; see "
    "docs/compatibility.md)",
    response=ProjectOut, tag="projects",
)  # fmt: skip
async def delete_project(request: web.Request) -> web.Response:
    own_project(request)
    raise Conflict(
        "a project cannot be deleted through its own API key: its event history is kept "
        "(revoke its keys instead)"
    )


@api.route(
    "POST", "/v1/projects/{id}/api-keys", "Create an API key (shown once)",
    body=CreateKey, response=NewApiKey, status=201, tag="projects",
)  # fmt: skip
async def create_key(request: web.Request) -> web.Response:
    project = own_project(request)
    req = await http.body(request, CreateKey)
    key = await request.app[keys.PROJECTS].create_key(project, req.name)
    return http.json(key, 201)


@api.route(
    "GET", "/v1/projects/{id}/api-keys", "List API keys (never their secrets)",
    response=list[ApiKey], tag="projects",
)  # fmt: skip
async def list_keys(request: web.Request) -> web.Response:
    project = own_project(request)
    return http.page(request, await request.app[keys.PROJECTS].list_keys(project))


@api.route(
    "DELETE", "/v1/projects/{id}/api-keys/{key_id}",
    "Revoke an API key; the streams opened with it end within a second, on every server",
    response=ApiKey, tag="projects",
)  # fmt: skip
async def revoke_key(request: web.Request) -> web.Response:
    project = own_project(request)
    key_id = http.path_id(request, "key_id")
    revoked = await request.app[keys.PROJECTS].revoke_key(project, key_id)
    request.app[keys.KEY_WATCH].revoke(revoked.id)  # here at once; elsewhere by NOTIFY
    return http.json(revoked)

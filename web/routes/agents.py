"""Agents over HTTP: create, list, read and patch (a new version each time). The rows, their
events and their queries belong to the ``Agents`` repository (``papayya.readmodels.agents``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Final

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from papayya.domain import bounds
from papayya.errors import ConcurrencyError, InvalidInput, NotFound
from papayya.readmodels.agents import (
    CONFIG_FIELDS,
    Agent,
    AgentConfig,
    AgentOut,
    Instructions,
    LoopThreshold,
    MaxSteps,
    McpServer,
    Model,
    Provider,
    Temperature,
    Tokens,
    Tool,
)
from papayya.readmodels.projects import new_id
from web import http, keys
from web.openapi import api

MAX_RETRIES: Final = 10

# Slugs have no "_", so a slug can never be mistaken for an id ("agent_<hex>").
Slug = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
]
AgentName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Description = Annotated[str, msgspec.Meta(max_length=4000)]
ProjectRef = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ConfigPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Fields sent replace the agent's; ``null`` puts a field back to its default."""

    model: Model | UnsetType | None = UNSET
    instructions: Instructions | UnsetType | None = UNSET
    max_steps: MaxSteps | UnsetType | None = UNSET
    budget_usd: Decimal | UnsetType | None = UNSET
    tools: list[Tool] | UnsetType | None = UNSET
    loop_threshold: LoopThreshold | UnsetType | None = UNSET
    budget_input_tokens: Tokens | UnsetType | None = UNSET
    budget_output_tokens: Tokens | UnsetType | None = UNSET
    budget_total_tokens: Tokens | UnsetType | None = UNSET
    temperature: Temperature | UnsetType | None = UNSET
    output_schema: dict[str, Any] | UnsetType | None = UNSET
    mcp_servers: list[McpServer] | UnsetType | None = UNSET
    provider: Provider | UnsetType | None = UNSET
    timeout_seconds: bounds.TimeoutSeconds | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        if isinstance(self.budget_usd, Decimal):
            bounds.check_usd(self.budget_usd)


class CreateAgent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: AgentName
    slug: Slug
    # Optional as in the hosted API: an agent deployed as code needs no config to start.
    config: AgentConfig = msgspec.field(default_factory=AgentConfig)
    project_id: ProjectRef | None = None
    description: Description | None = None


class PatchAgent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: AgentName | UnsetType = UNSET
    slug: Slug | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    config: ConfigPatch | UnsetType = UNSET


def _config_json(config: AgentConfig) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(config)
    return data


@api.route(
    "POST", "/v1/agents", "Create an agent",
    body=CreateAgent, response=AgentOut, status=201, tag="agents",
)  # fmt: skip
async def create_agent(request: web.Request) -> web.Response:
    req = await http.body(request, CreateAgent)
    project = http.project_id(request)
    if req.project_id is not None and req.project_id != project:
        raise NotFound(f"project {req.project_id} not found")
    now = datetime.now(UTC)
    agent = Agent(
        new_id("agent"),
        project,
        req.name,
        req.slug,
        req.description,
        _config_json(req.config),
        1,
        now,
        now,
    )
    created = await request.app[keys.AGENTS].create(agent, now)
    return http.json(created.out(), 201)


@api.route(
    "GET", "/v1/agents", "List agents, newest first",
    response=list[AgentOut], query=(("limit", "integer"), ("cursor", "string")), tag="agents",
)  # fmt: skip
async def list_agents(request: web.Request) -> web.Response:
    limit = http.limit(request)
    after_time, after_id = page_after(request)
    found = await request.app[keys.AGENTS].page(
        http.project_id(request), (after_time, after_id), limit + 1
    )
    agents = found[:limit]
    cursor = None
    if len(found) > limit:
        cursor = http.encode_cursor([agents[-1].created_at.isoformat(), agents[-1].id])
    return http.page(request, [a.out() for a in agents], cursor)


def page_after(request: web.Request) -> tuple[datetime | None, str | None]:
    """The ``(created_at, id)`` a list's ``cursor`` continues after."""
    values = http.decode_cursor(request)
    if values is None:
        return None, None
    try:
        moment, last_id = values
        if not isinstance(moment, str) or not isinstance(last_id, str):
            raise ValueError
        return datetime.fromisoformat(moment), last_id
    except ValueError:
        raise InvalidInput("cursor is not one this API issued") from None


@api.route(
    "GET", "/v1/agents/{id}", "An agent, by id or slug", response=AgentOut, tag="agents"
)  # fmt: skip
async def get_agent(request: web.Request) -> web.Response:
    agent = await request.app[keys.AGENTS].find(http.project_id(request), http.path_id(request))
    return http.json(agent.out())


@api.route(
    "PATCH", "/v1/agents/{id}", "Change an agent (a new version); fields sent replace",
    body=PatchAgent, response=AgentOut, tag="agents",
)  # fmt: skip
async def patch_agent(request: web.Request) -> web.Response:
    ref = http.path_id(request)
    req = await http.body(request, PatchAgent)
    repo = request.app[keys.AGENTS]
    for _ in range(MAX_RETRIES):
        current = await repo.find(http.project_id(request), ref)
        changed = patched(current, req)
        if changed == current:
            return http.json(current.out())
        now = datetime.now(UTC)
        try:
            done = await repo.update(changed, current.version, now)
        except ConcurrencyError:
            continue
        return http.json(done.out())
    raise ConcurrencyError(f"agent {ref} kept changing; try again")


def patched(agent: Agent, req: PatchAgent) -> Agent:
    """``agent`` with the patch applied; raises ``InvalidInput`` if the result is invalid."""
    config = agent.config
    if not isinstance(req.config, UnsetType):
        sent = {
            k: v
            for k in ConfigPatch.__struct_fields__
            if not isinstance(v := getattr(req.config, k), UnsetType)
        }
        merged = {k: v for k, v in _config_json(agent.settings).items() if k not in sent}
        merged.update({k: msgspec.to_builtins(v) for k, v in sent.items() if v is not None})
        try:
            settings = msgspec.convert(merged, AgentConfig, strict=False)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"invalid request body: {exc}") from None
        extra = {k: v for k, v in config.items() if k not in CONFIG_FIELDS}
        config = {**extra, **_config_json(settings)}
    return msgspec.structs.replace(
        agent,
        name=agent.name if isinstance(req.name, UnsetType) else req.name,
        slug=agent.slug if isinstance(req.slug, UnsetType) else req.slug,
        description=(
            agent.description if isinstance(req.description, UnsetType) else req.description
        ),
        config=config,
    )

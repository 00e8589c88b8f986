"""Agents: a row per agent (looked up by id or slug) and its history as ``AgentDefined``
events on the stream ``agent-<agent_id>``.

The row and the event are written in one Postgres transaction (``_write``), so neither can
exist without the other. The event store's ``append`` runs on a pool connection of its own,
so instead the store's append function ``papayya_append`` is called on the transaction's
connection, first, as that function asks, with the stream's expected version: a concurrent
redefinition loses with ``ConcurrencyError`` and is retried from a fresh read.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Final

import asyncpg
import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from papayya.domain import bounds
from papayya.domain import events as ev
from papayya.errors import ConcurrencyError, Conflict, InvalidInput, NotFound
from sql import queries
from web import http, keys, tenancy
from web.openapi import api

Q: Final = queries("api.sql")
AGENT_CATEGORY: Final = "agent"
MAX_RETRIES: Final = 10
# Event ids derived from (agent, version): the same definition can never be appended twice.
_EVENT_NAMESPACE: Final = uuid.UUID("6f0d5c1e-6a0b-4b6e-9a55-2c0f3d1a7b10")
_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode

# Slugs have no "_", so a slug can never be mistaken for an id ("agent_<hex>").
Slug = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
]
AgentName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Description = Annotated[str, msgspec.Meta(max_length=4000)]
Model = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Instructions = Annotated[str, msgspec.Meta(max_length=200_000)]
# A tool is named (a registered ``@tool``) or given as a provider-style definition.
Tool = Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | dict[str, Any]
MaxSteps = bounds.StepCount
Tokens = bounds.Tokens
LoopThreshold = Annotated[int, msgspec.Meta(ge=2, le=1000)]
ProjectRef = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How the agent runs. Every field has a default, so a run can override each one;
    ``budget_usd`` and the token budgets are per run, ``None`` is no limit."""

    model: Model | None = None
    instructions: Instructions = ""
    max_steps: MaxSteps | None = None
    budget_usd: Decimal | None = None
    tools: list[Tool] = []
    loop_threshold: LoopThreshold = 5
    budget_input_tokens: Tokens | None = None
    budget_output_tokens: Tokens | None = None
    budget_total_tokens: Tokens | None = None

    def __post_init__(self) -> None:
        bounds.check_usd(self.budget_usd)


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

    def __post_init__(self) -> None:
        if isinstance(self.budget_usd, Decimal):
            bounds.check_usd(self.budget_usd)


class CreateAgent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: AgentName
    slug: Slug
    config: AgentConfig
    project_id: ProjectRef | None = None
    description: Description | None = None


class PatchAgent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: AgentName | UnsetType = UNSET
    slug: Slug | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    config: ConfigPatch | UnsetType = UNSET


class AgentOut(msgspec.Struct):
    id: str
    project_id: str
    name: str
    slug: str
    description: str | None
    config: AgentConfig
    version: int
    created_at: datetime
    updated_at: datetime


class AgentList(msgspec.Struct):
    data: list[AgentOut]
    next_cursor: str | None


class Agent(msgspec.Struct, frozen=True):
    """An agent as stored; ``config`` is the stored JSON, which may hold keys that the API
    does not set (``deployment_version`` once deployments exist)."""

    id: str
    project_id: str
    name: str
    slug: str
    description: str | None
    config: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    deployment: int | None = None  # the latest ready deployment's version (``find`` only)

    @property
    def settings(self) -> AgentConfig:
        return _settings(self.config)

    @property
    def deployment_version(self) -> str | None:
        value = self.deployment or self.config.get("deployment_version")
        return None if value is None else str(value)

    def out(self) -> AgentOut:
        return AgentOut(
            self.id,
            self.project_id,
            self.name,
            self.slug,
            self.description,
            self.settings,
            self.version,
            self.created_at,
            self.updated_at,
        )


_CONFIG_FIELDS: Final = frozenset(AgentConfig.__struct_fields__)


def _settings(config: dict[str, Any]) -> AgentConfig:
    known = {k: v for k, v in config.items() if k in _CONFIG_FIELDS}
    return msgspec.convert(known, AgentConfig, strict=False)


def _agent(row: asyncpg.Record, version: int | None = None) -> Agent:
    return Agent(
        row["agent_id"],
        row["project_id"],
        row["name"],
        row["slug"],
        row["description"],
        _decode(row["config"]),
        row["version"] if version is None else version,
        row["created_at"],
        row["updated_at"],
        row.get("deployment"),
    )


async def find(pool: asyncpg.Pool, project_id: str, ref: str) -> Agent:
    """The project's agent whose id or slug is ``ref``; ``NotFound`` otherwise."""
    row = await pool.fetchrow(Q["agent"], project_id, ref)
    if row is None:
        raise NotFound(f"agent {ref} not found")
    return _agent(row)


async def _write(
    request: web.Request, agent: Agent, expected: int, query: str, now: datetime
) -> Agent:
    """Append ``AgentDefined`` for ``agent`` (stream at ``expected``) and run ``query``
    (the row's insert or update) in one transaction."""
    store = request.app[keys.STORE]
    version = expected + 1
    defined = ev.AgentDefined(
        at=now,
        agent_id=agent.id,
        project_id=agent.project_id,
        name=agent.name,
        slug=agent.slug,
        description=agent.description,
        config=agent.config,
    )
    event_id = uuid.uuid5(_EVENT_NAMESPACE, f"{agent.id}:{version}")
    event = ev.to_new_event(defined, event_id=event_id)
    stream = f"{AGENT_CATEGORY}-{agent.id}"
    async with store.pool.acquire() as conn, conn.transaction():
        await store.append_on(conn, stream, event, expected)  # ConcurrencyError if it moved
        try:
            row = await conn.fetchrow(
                query, agent.project_id, agent.id, agent.name, agent.slug, agent.description,
                _encode(agent.config).decode(), now,
            )  # fmt: skip
        except asyncpg.UniqueViolationError:
            raise Conflict(f"an agent with slug {agent.slug!r} exists") from None
        if row is None:  # raised inside the transaction, so the event goes too
            raise NotFound(f"agent {agent.id} not found")
    store.committed()  # local subscribers; other processes find it by their poll
    return _agent(row, version)


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
        tenancy.new_id("agent"),
        project,
        req.name,
        req.slug,
        req.description,
        _config_json(req.config),
        1,
        now,
        now,
    )
    created = await _write(request, agent, 0, Q["insert_agent"], now)
    return http.json(created.out(), 201)


@api.route(
    "GET", "/v1/agents", "List agents, newest first",
    response=AgentList, query=(("limit", "integer"), ("cursor", "string")), tag="agents",
)  # fmt: skip
async def list_agents(request: web.Request) -> web.Response:
    limit = http.limit(request)
    after_time, after_id = page_after(request)
    rows = await request.app[keys.STORE].pool.fetch(
        Q["list_agents"], http.project_id(request), after_time, after_id, limit + 1
    )
    agents = [_agent(r) for r in rows[:limit]]
    cursor = None
    if len(rows) > limit:
        cursor = http.encode_cursor([agents[-1].created_at.isoformat(), agents[-1].id])
    return http.json(AgentList([a.out() for a in agents], cursor))


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
    agent = await find(
        request.app[keys.STORE].pool, http.project_id(request), http.path_id(request)
    )
    return http.json(agent.out())


@api.route(
    "PATCH", "/v1/agents/{id}", "Change an agent (a new version); fields sent replace",
    body=PatchAgent, response=AgentOut, tag="agents",
)  # fmt: skip
async def patch_agent(request: web.Request) -> web.Response:
    ref = http.path_id(request)
    req = await http.body(request, PatchAgent)
    pool = request.app[keys.STORE].pool
    for _ in range(MAX_RETRIES):
        current = await find(pool, http.project_id(request), ref)
        changed = patched(current, req)
        if changed == current:
            return http.json(current.out())
        now = datetime.now(UTC)
        try:
            done = await _write(request, changed, current.version, Q["update_agent"], now)
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
        merged.update({k: v for k, v in sent.items() if v is not None})
        try:
            settings = msgspec.convert(merged, AgentConfig, strict=False)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"invalid request body: {exc}") from None
        extra = {k: v for k, v in config.items() if k not in _CONFIG_FIELDS}
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

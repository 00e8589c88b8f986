"""Agents: a row per agent (looked up by id or slug) and its history as ``AgentDefined``
events on the stream ``agent-<agent_id>``.

The row and the event are written in one Postgres transaction (``Agents.write``), so neither
can exist without the other. The event store's ``append`` runs on a pool connection of its
own, so instead the store's append function ``papayya_append`` is called on the transaction's
connection, first, as that function asks, with the stream's expected version: a concurrent
redefinition loses with ``ConcurrencyError`` and is retried from a fresh read.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

import asyncpg
import msgspec

from papayya.domain import bounds
from papayya.domain import events as ev
from papayya.errors import Conflict, NotFound
from papayya.readmodels import Db, Repository
from sql import queries

Q: Final = queries("api.sql")
AGENT_CATEGORY: Final = "agent"
# Event ids derived from (agent, version): the same definition can never be appended twice.
_EVENT_NAMESPACE: Final = uuid.UUID("6f0d5c1e-6a0b-4b6e-9a55-2c0f3d1a7b10")
_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode

Model = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Instructions = Annotated[str, msgspec.Meta(max_length=200_000)]
# A tool is named (a registered ``@tool``) or given as a provider-style definition.
Tool = Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | dict[str, Any]
MaxSteps = bounds.StepCount
Tokens = bounds.Tokens
LoopThreshold = Annotated[int, msgspec.Meta(ge=2, le=1000)]
Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
Provider = Literal["openai", "anthropic"]
McpUrl = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://[^\s/]+\S*$")]
ToolName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class SecretHeader(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A header value taken from the project's secret ``secret`` when the tool is called,
    after ``prefix`` (say ``"Bearer "``): the agent's configuration names the secret and
    never holds its value."""

    secret: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    prefix: Annotated[str, msgspec.Meta(max_length=200)] = ""


HeaderName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
]
# A header sent to a tool: a plain value, or a value from the project's secrets.
Headers = dict[HeaderName, Annotated[str, msgspec.Meta(max_length=4000)] | SecretHeader]


class McpServer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An MCP server whose tools the built-in loop offers the model (streamable HTTP);
    ``allowed_tools``, when set, narrows them to those names; ``headers`` go with every
    request to it."""

    url: McpUrl
    allowed_tools: list[ToolName] | None = None
    # Unset (and then left out of the agent's config as returned) when there are none.
    headers: Headers | msgspec.UnsetType = msgspec.UNSET


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How the agent runs. Every field has a default, so a run can override each one;
    ``budget_usd`` and the token budgets are per run, ``None`` is no limit.

    An agent with a ``model`` and no deployment runs in the built-in loop
    (``workers.agentloop``): ``instructions`` is its system prompt, ``tools`` (HTTP tools:
    ``{"name", "description", "parameters", "url", "headers"}``) and ``mcp_servers`` its
    tools (a header's value may come from a project secret: ``SecretHeader``),
    ``output_schema`` the JSON Schema its answer must satisfy, ``provider`` the API shape
    when the price table does not know the model."""

    model: Model | None = None
    instructions: Instructions = ""
    max_steps: MaxSteps | None = None
    budget_usd: Decimal | None = None
    tools: list[Tool] = []
    loop_threshold: LoopThreshold = 5
    budget_input_tokens: Tokens | None = None
    budget_output_tokens: Tokens | None = None
    budget_total_tokens: Tokens | None = None
    temperature: Temperature | None = None
    output_schema: dict[str, Any] | None = None
    mcp_servers: list[McpServer] = []
    provider: Provider | None = None
    # Seconds a run of the agent may take (a run's own ``timeout_seconds`` wins; unset: the
    # project's default, else 1 h).
    timeout_seconds: bounds.TimeoutSeconds | None = None

    def __post_init__(self) -> None:
        bounds.check_usd(self.budget_usd)
        for tool in self.tools:
            if isinstance(tool, dict) and "url" in tool:
                check_http_tool(tool)


def check_http_tool(tool: dict[str, Any]) -> None:
    """An HTTP tool needs a name the providers accept and an http(s) URL; its ``parameters``
    (a JSON Schema) and ``description`` are optional."""
    msgspec.convert(tool, HttpTool)


class HttpTool(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A tool the built-in loop runs by POSTing its arguments, signed, to ``url``."""

    name: ToolName
    url: McpUrl
    description: Annotated[str, msgspec.Meta(max_length=4000)] = ""
    parameters: dict[str, Any] = {}
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 30.0
    headers: Headers = {}


CONFIG_FIELDS: Final = frozenset(AgentConfig.__struct_fields__)


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
    # The project's default time limit of runs, if it set one (``find`` only).
    project_timeout_seconds: int | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record, version: int | None = None) -> Agent:
        return cls(
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
            row.get("project_timeout_seconds"),
        )

    @property
    def settings(self) -> AgentConfig:
        return settings(self.config)

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


def settings(config: dict[str, Any]) -> AgentConfig:
    """The API's fields of a stored config."""
    known = {k: v for k, v in config.items() if k in CONFIG_FIELDS}
    return msgspec.convert(known, AgentConfig, strict=False)


async def find(db: Db, project_id: str, ref: str) -> Agent:
    """The project's agent whose id or slug is ``ref``; ``NotFound`` otherwise."""
    row = await db.fetchrow(Q["agent"], project_id, ref)
    if row is None:
        raise NotFound(f"agent {ref} not found")
    return Agent.from_row(row)


class Agents(Repository):
    """The agents of every project; each call is scoped to one."""

    async def find(self, project_id: str, ref: str) -> Agent:
        """The project's agent whose id or slug is ``ref``; ``NotFound`` otherwise."""
        return await find(self.pool, project_id, ref)

    async def page(
        self, project_id: str, after: tuple[datetime | None, str | None], limit: int
    ) -> list[Agent]:
        """Up to ``limit`` agents, newest first, after the ``(created_at, id)`` of the
        previous page's last one."""
        rows = await self.pool.fetch(Q["list_agents"], project_id, *after, limit)
        return [Agent.from_row(r) for r in rows]

    async def create(self, agent: Agent, now: datetime) -> Agent:
        """Insert ``agent`` (version 1); ``Conflict`` if its slug is taken in the project."""
        return await self._write(agent, 0, Q["insert_agent"], now)

    async def update(self, agent: Agent, expected: int, now: datetime) -> Agent:
        """Redefine ``agent``, whose stream is at ``expected``; ``ConcurrencyError`` if it
        moved meanwhile."""
        return await self._write(agent, expected, Q["update_agent"], now)

    async def _write(self, agent: Agent, expected: int, query: str, now: datetime) -> Agent:
        """Append ``AgentDefined`` for ``agent`` (stream at ``expected``) and run ``query``
        (the row's insert or update) in one transaction."""
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
        async with self.transaction(appends=True) as conn:
            await self.store.append_on(conn, stream, event, expected)  # ConcurrencyError if moved
            try:
                row = await conn.fetchrow(
                    query, agent.project_id, agent.id, agent.name, agent.slug,
                    agent.description, _encode(agent.config).decode(), now,
                )  # fmt: skip
            except asyncpg.UniqueViolationError:
                raise Conflict(f"an agent with slug {agent.slug!r} exists") from None
            if row is None:  # raised inside the transaction, so the event goes too
                raise NotFound(f"agent {agent.id} not found")
        return Agent.from_row(row, version)

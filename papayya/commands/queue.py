"""Queue a run: the one place a ``RunQueued`` is built (``queued``) and a new run appended.

``queue_run`` is ``POST /v1/runs``: a run of a project's agent, its limits taken from the
request, else the agent's config, else the project's defaults (``papayya.domain.defaults``),
idempotent on an ``idempotency_key``. Schedules and webhooks queue theirs through it too;
replays, durable opens and the SDK's direct mode build their ``RunQueued`` with ``queued``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, Protocol

import msgspec

from eventstore.types import prepare
from papayya.domain import bounds
from papayya.domain import events as ev
from papayya.domain.defaults import ProjectDefaults, resolve
from papayya.domain.state import RunState
from papayya.errors import InvalidInput
from papayya.money import cents_to_micro, usd_to_micro
from papayya.runs import Runs

# RunQueued has no field for the model yet: until it does, the run's model (the request's,
# else the agent's) travels in its metadata under this reserved key.
MODEL_KEY: Final = "papayya.model"
# Likewise the system prompt a run or a replay gives the built-in loop instead of the agent's.
SYSTEM_PROMPT_KEY: Final = "papayya.system_prompt"
# A run that asks for the built-in agent loop (``"runtime": "builtin"``) even though its
# agent has a deployment: the worker then runs the agent's configuration, not its code.
RUNTIME_KEY: Final = "papayya.runtime"
BUILTIN: Final = "builtin"
RESERVED_PREFIX: Final = "papayya."

Model = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Instructions = Annotated[str, msgspec.Meta(max_length=200_000)]
CallbackUrl = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://[^\s/]+\S*$")]
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]


class RunOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A run of the agent in the path. Limits not sent come from the agent's config; a
    string ``input`` is kept as given, anything else as JSON."""

    input: Any = None
    model: Model | None = None
    # The built-in loop's instructions for this run (the published SDK's Client.run sends it).
    system_prompt: Instructions | None = None
    runtime: Literal["builtin"] | None = None
    max_steps: bounds.StepCount | None = None
    budget_cents: bounds.Cents | None = None
    budget_input_tokens: bounds.Tokens | None = None
    budget_output_tokens: bounds.Tokens | None = None
    budget_total_tokens: bounds.Tokens | None = None
    # Seconds the run may take from its start, across attempts (papayya.domain.timelimit).
    timeout_seconds: bounds.TimeoutSeconds | None = None
    callback_url: CallbackUrl | None = None
    idempotency_key: IdempotencyKey | None = None
    metadata: dict[str, Any] = {}


class AgentDefaults(Protocol):
    """What a run takes from its agent's config when the request does not say."""

    @property
    def model(self) -> str | None: ...
    @property
    def max_steps(self) -> int | None: ...
    @property
    def budget_usd(self) -> Decimal | None: ...
    @property
    def budget_input_tokens(self) -> int | None: ...
    @property
    def budget_output_tokens(self) -> int | None: ...
    @property
    def budget_total_tokens(self) -> int | None: ...
    @property
    def loop_threshold(self) -> int: ...
    @property
    def timeout_seconds(self) -> int | None: ...


class QueueableAgent(Protocol):
    """An agent as a run needs it (the read model's agent fits)."""

    @property
    def id(self) -> str: ...
    @property
    def project_id(self) -> str: ...
    @property
    def settings(self) -> AgentDefaults: ...
    @property
    def deployment_version(self) -> str | None: ...
    @property
    def project_timeout_seconds(self) -> int | None:
        """The project's default time limit, if it set one (read with the agent)."""
        ...


# (project_id, id or slug) -> the agent; ``NotFound`` if the project has none such.
FindAgent = Callable[[str, str], Awaitable[QueueableAgent]]
# project_id -> the limits its runs get when neither they nor their agent state one.
FindDefaults = Callable[[str], Awaitable[ProjectDefaults]]


class IdempotencyKeys(Protocol):
    """Which run a project's idempotency key names (the first caller's)."""

    async def claim(self, project_id: str, key: str, run_id: str) -> bool:
        """Name ``run_id`` by ``key``; ``False`` if the key names a run already."""
        ...

    async def run_of(self, project_id: str, key: str) -> str:
        """The run ``key`` names (claimed before)."""
        ...


class InMemoryIdempotencyKeys:
    """The in-memory twin of ``papayya.readmodels.idempotency.IdempotencyKeys`` (unit
    tests)."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], str] = {}

    async def claim(self, project_id: str, key: str, run_id: str) -> bool:
        return self._runs.setdefault((project_id, key), run_id) == run_id

    async def run_of(self, project_id: str, key: str) -> str:
        return self._runs[project_id, key]


def queued(**fields: Any) -> ev.RunQueued:
    """The ``RunQueued`` of a new run, refused now (``InvalidInput``), before anything is
    written, if it could not be appended (invalid, larger than an event may be, holding a NUL
    character)."""
    event = ev.RunQueued(**fields)
    prepare([ev.to_new_event(event)])
    return event


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex}"


def run_of_agent(
    run_id: str,
    agent: QueueableAgent,
    req: RunOptions,
    defaults: ProjectDefaults,
    trigger: str = "api",
) -> ev.RunQueued:
    """The ``RunQueued`` of a run of ``agent`` as ``req`` asks, the agent's config filling in
    what it does not say, and the project's ``defaults`` the budget and step limit that
    neither says."""
    config = agent.settings
    if any(k.startswith(RESERVED_PREFIX) for k in req.metadata):
        raise InvalidInput(f"metadata keys starting with {RESERVED_PREFIX!r} are reserved")
    metadata = dict(req.metadata)
    model = req.model or config.model
    if model is not None:
        metadata[MODEL_KEY] = model
    if req.system_prompt is not None:
        metadata[SYSTEM_PROMPT_KEY] = req.system_prompt
    if req.runtime == BUILTIN:
        if model is None:
            raise InvalidInput("runtime 'builtin' needs a model, the run's or the agent's")
        metadata[RUNTIME_KEY] = BUILTIN

    def pick(sent: int | None, default: int | None) -> int | None:
        return default if sent is None else sent

    budget = resolve(
        cents_to_micro(req.budget_cents),
        usd_to_micro(config.budget_usd),
        cents_to_micro(defaults.budget_cents),
    )
    return queued(
        run_id=run_id,
        project_id=agent.project_id,
        agent_id=agent.id,
        input=req.input,
        budget_micro_usd=budget,
        budget_input_tokens=pick(req.budget_input_tokens, config.budget_input_tokens),
        budget_output_tokens=pick(req.budget_output_tokens, config.budget_output_tokens),
        budget_total_tokens=pick(req.budget_total_tokens, config.budget_total_tokens),
        max_steps=resolve(req.max_steps, config.max_steps, defaults.max_steps),
        loop_threshold=config.loop_threshold,
        timeout_seconds=timeout_of(agent, req),
        trigger=trigger,
        idempotency_key=req.idempotency_key,
        callback_url=req.callback_url,
        deployment_version=agent.deployment_version,
        metadata=metadata,
    )


def timeout_of(agent: QueueableAgent, req: RunOptions) -> int:
    """The run's time limit: the request's, else the agent's, else the project's default,
    else 1 h. Resolved (and recorded) at queueing: a later change of the agent or the
    project does not change a queued run's limit."""
    for found in (req.timeout_seconds, agent.settings.timeout_seconds):
        if found is not None:
            return found
    return agent.project_timeout_seconds or bounds.DEFAULT_TIMEOUT_SECONDS


def check_run(agent: QueueableAgent, req: RunOptions, trigger: str = "api") -> None:
    """Raise now if a run of ``agent`` with ``req`` could not be queued (a schedule checks
    its run options when it is created, not at its first fire; the project's defaults, read
    at each fire, cannot make a valid request invalid)."""
    run_of_agent(new_run_id(), agent, req, ProjectDefaults(), trigger)


async def queue(runs: Runs, event: ev.RunQueued) -> RunState:
    """Create the run; if it exists already, return it unchanged (safe to retry)."""
    return await runs.queue(event)


async def queue_run(
    runs: Runs,
    keys: IdempotencyKeys,
    find_agent: FindAgent,
    project: str,
    agent_ref: str,
    req: RunOptions,
    *,
    find_defaults: FindDefaults,
    trigger: str = "api",
    run_id: str | None = None,
    trigger_metadata: Mapping[str, Any] | None = None,
) -> tuple[RunState, bool]:
    """Queue a run of the project's agent ``agent_ref`` (id or slug). Returns the run and
    whether this call created it: with an ``idempotency_key`` already used, the run that the
    key's first caller created (whatever this call's other fields say). ``find_defaults``
    gives the project's limits for what neither the request nor the agent states.
    ``trigger_metadata`` goes into the run's metadata after the check that keeps callers out
    of the reserved keys."""
    agent = await find_agent(project, agent_ref)
    defaults = await find_defaults(project)
    event = run_of_agent(run_id or new_run_id(), agent, req, defaults, trigger)
    if trigger_metadata:
        event = queued(**fields_of(event, metadata={**event.metadata, **trigger_metadata}))
    key = req.idempotency_key
    if key is None or await keys.claim(project, key, event.run_id):
        return await queue(runs, event), True
    existing = await keys.run_of(project, key)
    # The first request may still be appending, or may have died between its claim and its
    # append: queueing under its run id completes it, and queue returns the run as it is if
    # it exists. Either way the key names exactly one run.
    return await queue(runs, msgspec.structs.replace(event, run_id=existing)), False


def fields_of(event: ev.RunQueued, **changes: Any) -> dict[str, Any]:
    """``event``'s fields with ``changes``, to build it again with ``queued`` (which checks
    the changed event can be stored)."""
    return {**{f: getattr(event, f) for f in event.__struct_fields__}, **changes}

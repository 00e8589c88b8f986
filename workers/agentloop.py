"""The built-in agent loop (issue 17): an agent made of configuration alone (a model,
instructions, tools, limits) run inside the worker process as trusted server code.

It is a runtime like ``process`` and ``docker`` (``workers.runtime``), so the worker's
lease, cancellation relay and outcome recording apply unchanged: the worker picks it for a
run whose agent has a model and no deployment (``builtin_deployment``).

Each model call goes through the gateway's metering core (``Meter.call``) with the attempt
number, so it is a step with tokens and cost, reserved against the budget before the
provider is called and settled after; ``max_steps``, loop detection and budget refusals end
the run there exactly as for code agents. A re-executed loop (a resume after a crash, a
replay) rebuilds the same requests, which the meter answers from the recording; tool calls
are answered from the recording the same way (``Replayer`` over the run's tool calls), so
finished model and tool calls are not repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import traceback
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import Any, Final

import aiohttp
import jsonschema
import msgspec

from eventstore.postgres import PostgresEventStore
from papayya import urlguard
from papayya.commands.queue import BUILTIN, RUNTIME_KEY
from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.domain.matcher import Recorded, Replayer, tool_fingerprint
from papayya.domain.state import RunState
from papayya.errors import NotFound
from papayya.metering import providers as pv
from papayya.metering.meter import Meter, MeteredResponse, Upstream
from papayya.metering.ratecards import RateCardCache
from papayya.readmodels.agents import AgentConfig, Agents
from papayya.readmodels.secrets import Secrets
from papayya.runs import Runs
from workers.runtime import Deployment, Launch
from workers.shapes import Call, Settings, Shape, first_message, provider_of, shape_for
from workers.tools import HttpTools, McpTools, ToolResult, message_id, parse_http_tools

log = logging.getLogger(__name__)

LOOP_RUNTIME: Final = "agentloop"
# Keys of a run's metadata that override the agent's model and instructions (set by
# ``POST /v1/runs`` and ``POST /v1/runs/{id}/replay``; ``web.routes.runs`` names them too).
MODEL_KEY: Final = "papayya.model"
SYSTEM_PROMPT_KEY: Final = "papayya.system_prompt"
OUTPUT_LINES: Final = 200
ERROR_CHARS: Final = 2000
# A model call that failed at the provider (5xx, 429, unreachable) is tried this many times.
MODEL_TRIES: Final = 3
RETRY_STATUSES: Final = frozenset((429, 500, 502, 503, 504))
EXIT_STOPPED: Final = -15


async def builtin_deployment(store: PostgresEventStore, state: RunState) -> Deployment | None:
    """The built-in loop as the run's deployment, if its agent (or the run) names a model."""
    try:
        agent = await Agents(store).find(state.project_id, state.agent_id)
    except NotFound:
        return None
    if not (state.metadata.get(MODEL_KEY) or agent.settings.model):
        return None
    return Deployment(
        deployment_id=f"builtin-{agent.id}",
        project_id=agent.project_id,
        agent_id=agent.id,
        version=agent.version,
        runtime=LOOP_RUNTIME,
        entrypoint="builtin:agentloop",
    )


async def requested_loop(store: PostgresEventStore, state: RunState) -> Deployment | None:
    """The built-in loop if the run asked for it (``"runtime": "builtin"``), taking it
    before the agent's deployment; ``None`` otherwise, or if the agent has lost its model
    since (then the deployment runs it, as without the request)."""
    if state.metadata.get(RUNTIME_KEY) != BUILTIN:
        return None
    return await builtin_deployment(store, state)


class AgentLoopRuntime:
    """Starts loops as tasks of the worker's event loop; one metering core for them all."""

    name = LOOP_RUNTIME

    def __init__(
        self,
        store: PostgresEventStore,
        upstreams: Mapping[pv.Provider, Upstream],
        *,
        allow_private: bool = False,
        call_timeout: float = 600.0,
    ) -> None:
        self.store = store
        self.upstreams = upstreams
        self.allow_private = allow_private
        self.call_timeout = call_timeout
        self._meter: Meter | None = None
        self._sessions: list[aiohttp.ClientSession] = []
        self.tool_session: aiohttp.ClientSession | None = None
        self._in_flight: set[asyncio.Future[MeteredResponse]] = set()

    def _open(self) -> Meter:
        if self._meter is None:
            timeout = aiohttp.ClientTimeout(total=self.call_timeout, sock_connect=10)
            model_session = aiohttp.ClientSession(timeout=timeout)
            self.tool_session = urlguard.session(
                aiohttp.ClientTimeout(total=300), allow_private=self.allow_private
            )
            self._sessions = [model_session, self.tool_session]
            cards = RateCardCache.of(self.store)
            self._meter = Meter(self.store, model_session, self.upstreams, cards)
        return self._meter

    async def metered(self, call: Coroutine[Any, Any, MeteredResponse]) -> MeteredResponse:
        """``call``, carried on to its settlement even if the loop is stopped meanwhile: as
        at the gateway, a model call that reached the provider is recorded and settled
        once, whoever stops waiting for it (its reservation is never left open)."""
        task = asyncio.ensure_future(call)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return await asyncio.shield(task)

    async def start(self, launch: Launch) -> LoopHandle:
        meter = self._open()
        loop = AgentLoop(self, meter, launch.run_id, launch.attempt, launch.secrets)
        return LoopHandle(loop)

    async def close(self) -> None:
        if self._in_flight:  # calls of stopped loops: let them settle
            await asyncio.wait(self._in_flight, timeout=min(self.call_timeout, 30.0))
        for session in self._sessions:
            await session.close()
        self._sessions = []
        self._meter = None


class LoopHandle:
    """The loop as an ``AgentHandle``: stopping it cancels its task (a tool call in flight
    is cut off), and its log lines are the run's agent output."""

    def __init__(self, loop: AgentLoop) -> None:
        self.loop = loop
        self.task = asyncio.create_task(loop.run(), name=f"agentloop-{loop.run_id}")

    async def wait(self) -> int:
        try:
            return await asyncio.shield(self.task)
        except asyncio.CancelledError:
            if self.task.cancelled():
                return EXIT_STOPPED
            raise

    async def stop(self, grace: float) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def output(self) -> str:
        return "\n".join(text for _, text in self.loop.log)

    def lines(self) -> list[tuple[float, str]]:
        return list(self.loop.log)

    def counted(self) -> tuple[int, list[tuple[float, str]]]:
        return self.loop.logged, list(self.loop.log)


class _Ended(Exception):
    """The run is no longer this attempt's to run (it ended, or the attempt was lost)."""


class AgentLoop:
    def __init__(
        self,
        runtime: AgentLoopRuntime,
        meter: Meter,
        run_id: str,
        attempt: int,
        secrets: Mapping[str, str] | None = None,
    ):
        self.runtime = runtime
        # The project's secrets, opened by the worker for this attempt: the values of the
        # tools' secret headers. Kept only as long as the attempt.
        self.secrets = secrets or {}
        self.store = runtime.store
        self.meter = meter
        # The meter's run-state repository: the loop's own writes (tool calls, checkpoints)
        # are then in the state the meter reserves on, not an append it loses to.
        self.runs: Runs = meter.cache.runs
        self.run_id = run_id
        self.attempt = attempt
        self.log: deque[tuple[float, str]] = deque(maxlen=OUTPUT_LINES)
        self.logged = 0  # lines written to ``log`` in all
        self.state: RunState | None = None

    def say(self, text: str) -> None:
        self.log.append((time.time(), text))
        self.logged += 1

    async def run(self) -> int:
        """0 when the run ended (by the loop, the meter or anyone else); 1 when the loop
        broke (the worker then treats the attempt as crashed and may retry it)."""
        try:
            await self._run()
            return 0
        except _Ended:
            return 0
        except Exception:
            log.exception("run %s: the agent loop failed", self.run_id)
            for line in traceback.format_exc().splitlines()[-40:]:
                self.say(line)
            return 1

    async def _run(self) -> None:
        events = await self.runs.events(self.run_id)
        state = self.state = fold(events)
        self._check(state)
        agent = await Agents(self.store).find(state.project_id, state.agent_id)
        config = agent.settings
        live = self._settings(state.metadata, config)
        before = live
        if state.replayed_from is not None and state.replay_from_step:
            with contextlib.suppress(NotFound):  # the source is gone: the replay runs live
                source = await self.runs.load(state.replayed_from)
                before = self._settings(source.metadata, config)
        provider = config.provider or provider_of(live.model)
        shape = shape_for(provider)
        secret = await Secrets(self.store).callbacks(state.project_id)
        assert self.runtime.tool_session is not None
        http_tools = HttpTools(
            parse_http_tools(config.tools), self.runtime.tool_session, secret,
            allow_private=self.runtime.allow_private, secrets=self.secrets,
        )  # fmt: skip
        mcp = McpTools(allow_private=self.runtime.allow_private, secrets=self.secrets)
        try:
            for problem in await mcp.open(config.mcp_servers):
                self.say(problem)
            specs = http_tools.specs()
            specs += [s for s in mcp.specs() if s.name not in http_tools.tools]
            recording = await self.runs.recording(state, events, frozenset({"tool"}))
            tools = _ToolRunner(self, http_tools, mcp, recording.calls, recording.until_step,
                                copied=recording.copied)  # fmt: skip
            messages = [first_message(_text(state.input))]
            step = 0
            while True:
                settings = before if step < (state.replay_from_step or 0) else live
                settings = Settings(settings.model, settings.system, specs,
                                    config.temperature, config.output_schema)  # fmt: skip
                turn = shape.turn(await self._model_call(shape, settings, messages, step))
                messages.append(turn.message)
                if not turn.calls:
                    await self._finish(turn.text, config.output_schema)
                    return
                self._check(await self._fresh())  # ended by loop detection, say
                done = [(call, await tools.run(call, i)) for i, call in enumerate(turn.calls)]
                messages += shape.results(done)
                step += 1
        finally:
            await mcp.close()

    @staticmethod
    def _settings(metadata: dict[str, Any], config: AgentConfig) -> Settings:
        model = metadata.get(MODEL_KEY) or config.model
        system = metadata.get(SYSTEM_PROMPT_KEY)
        return Settings(str(model), system if isinstance(system, str) else config.instructions)

    def _check(self, state: RunState) -> None:
        if state.status != "running" or state.attempt != self.attempt:
            raise _Ended

    async def _fresh(self) -> RunState:
        assert self.state is not None
        self.state = await self.runs.refresh(self.state)
        return self.state

    async def _model_call(
        self, shape: Shape, settings: Settings, messages: list[dict[str, Any]], step: int
    ) -> Any:
        body = json.dumps(shape.request(settings, messages)).encode()
        for tries in range(1, MODEL_TRIES + 1):
            self.say(f"model call {step}: {settings.model}")
            answer = await self.runtime.metered(
                self.meter.call(self.run_id, shape.provider, shape.route, body,
                                attempt=self.attempt)
            )  # fmt: skip
            if answer.status == 200:
                try:
                    return json.loads(answer.body)
                except ValueError:
                    await self._fail("model_error", "the model's answer is not JSON")
            self._check(await self._fresh())  # the meter ended the run (budget, max_steps…)
            if answer.status not in RETRY_STATUSES or tries == MODEL_TRIES:
                await self._fail("model_error", f"the model call failed: {_why(answer)}")
            await asyncio.sleep(tries)
        raise AssertionError("unreachable")

    async def _finish(self, text: str, schema: dict[str, Any] | None) -> None:
        output: Any = text
        if schema is not None:
            try:
                output = json.loads(text)
                jsonschema.validate(output, schema)
            except ValueError:
                await self._fail(
                    "output_schema_mismatch",
                    f"the answer is not JSON, but output_schema asks for it: {text[:500]!r}",
                )
            except jsonschema.ValidationError as exc:
                await self._fail(
                    "output_schema_mismatch",
                    f"the answer does not satisfy output_schema: {exc.message[:ERROR_CHARS]}",
                )
            except jsonschema.SchemaError as exc:
                await self._fail("output_schema_invalid", f"output_schema: {exc.message}")
        await self._end([ev.RunCompleted(output=output)])

    async def _fail(self, code: str, message: str) -> None:
        self.say(f"{code}: {message}")
        await self._end([ev.RunFailed(code=code, message=message[:ERROR_CHARS])])
        raise _Ended

    async def _end(self, events: list[ev.RunEvent]) -> None:
        await self.append(lambda s: events)

    async def append(self, build: Any) -> RunState:
        """Append what ``build`` makes of the freshest state, as this attempt; ``_Ended`` if
        the run is no longer this attempt's."""
        assert self.state is not None

        def current(state: RunState) -> list[ev.RunEvent]:
            self._check(state)
            built: list[ev.RunEvent] = build(state)
            return built

        self.state = await self.runs.append_fresh(await self._fresh(), current)
        return self.state


class _ToolRunner:
    """Runs the model's tool calls, or answers them from the recording while it matches,
    and records each on the step whose model call asked for it."""

    def __init__(
        self,
        loop: AgentLoop,
        http_tools: HttpTools,
        mcp: McpTools,
        recorded: list[Recorded],
        until_step: int | None,
        *,
        copied: bool,
    ) -> None:
        self.loop = loop
        self.http = http_tools
        self.mcp = mcp
        self.replayer = Replayer(recorded, until_step)
        self.copied = copied  # a replay: answers from the source are recorded as its own

    async def run(self, call: Call, index: int) -> ToolResult:
        arguments = call.arguments
        fingerprint = tool_fingerprint(call.name, arguments)
        found = self.replayer.match("tool", fingerprint)
        if found is not None:
            output = found.result
            if found.result_ref is not None:
                output = msgspec.json.decode(await self.loop.store.get_payload(found.result_ref))
            result = ToolResult(output=output, error=found.error)
            if self.copied:
                await self._record(call, fingerprint, result)
            return result
        if call.bad_arguments is not None:
            result = ToolResult(error="the arguments are not valid JSON")
        elif call.name in self.http.tools:
            self.loop.say(f"tool {call.name}: POST")
            mid = message_id(self.loop.run_id, call.call_id, index)
            result = await self.http.call(call.name, arguments, mid)
        elif call.name in self.mcp:
            self.loop.say(f"tool {call.name}: MCP call")
            result = await self.mcp.call(call.name, arguments)
        else:
            result = ToolResult(error=f"there is no tool named {call.name!r}")
        if result.error is not None:
            self.loop.say(f"tool {call.name}: {result.error}")
        await self._record(call, fingerprint, result)
        return result

    async def _record(self, call: Call, fingerprint: str, result: ToolResult) -> None:
        def build(state: RunState) -> list[ev.RunEvent]:
            return [
                ev.ToolCallRecorded(
                    step_number=state.steps[-1].step_number,
                    tool=call.name[:200] or "?",
                    fingerprint=fingerprint,
                    call_id=call.call_id,
                    input=call.arguments,
                    output=None if result.error is not None else result.output,
                    error=result.error,
                    duration_ms=result.duration_ms,
                )
            ]

        await self.loop.append(build)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _why(answer: MeteredResponse) -> str:
    return f"HTTP {answer.status}: {answer.body[:500].decode(errors='replace')}"

"""The runtime API (DESIGN §7, §8): what ``python -m papayya.runtime`` calls with its run token.

Tool calls and tasks are asked about before they run: a resumed attempt gets the recording's
answer while its calls match the recording (``Replayer``, one per attempt and kind), and runs
live from the first mismatch. What ran live is then recorded with ``…/result``.

Where a tool call is recorded: on the run's latest step (usually the ``tool_call`` step of the
model call that asked for it), as the fold's rules want. A tool called before any step exists
gets a ``tool_call`` step of its own, labelled with the tool's name, so no call goes unrecorded.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
from aiohttp import web

from eventstore.postgres import PostgresEventStore
from papayya.domain import events as ev
from papayya.domain.bounds import Millis
from papayya.domain.events import Label, Name
from papayya.domain.matcher import (
    CallKind,
    Recorded,
    Replayer,
    task_fingerprint,
    tool_fingerprint,
)
from papayya.domain.state import RunState
from papayya.errors import Conflict, Unauthorized
from papayya.runs import Runs
from papayya.sdk.http import CheckpointBody, Message
from sql import queries
from web import gateway, http, keys
from web.openapi import api
from web.routes.durable import _stash, _task_events

Q: Final = queries("runtime.sql")
CACHED_ATTEMPTS: Final = 1024
ERROR_TEXT: Final = 100_000


class RuntimeRun(msgspec.Struct):
    run_id: str
    agent_id: str
    attempt: int
    input: Any = None


class Heartbeat(msgspec.Struct, forbid_unknown_fields=True):
    pass


class HeartbeatAck(msgspec.Struct):
    run_id: str
    attempt: int
    cancel_requested: bool


class ToolCallBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    tool: Name
    arguments: Any = None
    call_id: str | None = None


class ToolResultBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    tool: Name
    arguments: Any = None
    call_id: str | None = None
    output: Any = None
    error: str | None = None
    duration_ms: Millis = 0.0


class TaskBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    label: Label


class Answer(msgspec.Struct, omit_defaults=True):
    """Whether a recording answers the call, and if so with what."""

    recorded: bool
    output: Any = None
    result: Any = None
    error: str | None = None


class CompleteBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    output: Any = None


class FailBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    error_type: Name
    message: Message = ""
    traceback: str = ""


class Outcome(msgspec.Struct):
    run_id: str
    status: str


class Replayers:
    """A replayer per (run, attempt, kind), built from the run's recording on first use."""

    def __init__(self, runs: Runs) -> None:
        self.runs = runs
        self._cache: OrderedDict[tuple[str, int, CallKind], Replayer] = OrderedDict()
        self._building: dict[tuple[str, int, CallKind], asyncio.Lock] = {}

    async def get(self, state: RunState, kind: CallKind) -> Replayer:
        key = (state.run_id, state.attempt, kind)
        found = self._cache.get(key)
        if found is None:
            # One build per key; other runs' first calls do not wait behind this read.
            async with self._building.setdefault(key, asyncio.Lock()):
                found = self._cache.get(key)
                if found is None:
                    events = await self.runs.events(state.run_id)
                    # A replay's tool calls before its from_step come from its source too.
                    rec = await self.runs.recording(state, events, frozenset({kind}))
                    found = self._cache[key] = Replayer(rec.calls, rec.until_step)
                    while len(self._cache) > CACHED_ATTEMPTS:
                        self._cache.popitem(last=False)
            self._building.pop(key, None)
        self._cache.move_to_end(key)
        return found


_REPLAYERS: weakref.WeakKeyDictionary[PostgresEventStore, Replayers] = weakref.WeakKeyDictionary()


def _replayers(request: web.Request) -> Replayers:
    store = request.app[keys.STORE]
    found = _REPLAYERS.get(store)
    if found is None:
        found = _REPLAYERS[store] = Replayers(request.app[keys.RUNS])
    return found


async def _running(request: web.Request) -> RunState:
    """The token's run, running in the token's attempt; 401 otherwise."""
    run_id = await gateway.running_run(request)
    if run_id is None:
        raise Unauthorized("invalid or expired run token (it works only while its run is running)")
    return await request.app[keys.RUNS].load(run_id)


async def _append(
    request: web.Request, state: RunState, build: Callable[[RunState], Sequence[ev.RunEvent]]
) -> RunState:
    # append_fresh: the gateway's meter appends to the same run; a lost race rebuilds.
    return await request.app[keys.RUNS].append_fresh(state, build)


async def _resolved(store: PostgresEventStore, found: Recorded) -> Any:
    if found.result_ref is None:
        return found.result
    return msgspec.json.decode(await store.get_payload(found.result_ref))


@api.route(
    "GET", "/v1/runtime/run", "The run this token runs: id, agent, attempt and input",
    auth="run_token", response=RuntimeRun, tag="runtime",
)  # fmt: skip
async def get_run(request: web.Request) -> web.Response:
    state = await _running(request)
    return http.json(RuntimeRun(state.run_id, state.agent_id, state.attempt, state.input))


@api.route(
    "POST", "/v1/runtime/heartbeat", "The agent is alive; answers whether to stop",
    auth="run_token", body=Heartbeat, response=HeartbeatAck, tag="runtime",
)  # fmt: skip
async def heartbeat(request: web.Request) -> web.Response:
    await http.body(request, Heartbeat)
    state = await _running(request)
    await request.app[keys.STORE].pool.execute(Q["heartbeat"], state.run_id, state.attempt)
    return http.json(HeartbeatAck(state.run_id, state.attempt, state.cancel_requested))


@api.route(
    "POST", "/v1/runtime/tool-calls",
    "Before running a tool: its recorded outcome if this attempt replays a matching call",
    auth="run_token", body=ToolCallBody, response=Answer, tag="runtime",
)  # fmt: skip
async def ask_tool_call(request: web.Request) -> web.Response:
    req = await http.body(request, ToolCallBody)
    print_ = tool_fingerprint(req.tool, req.arguments)
    state = await _running(request)
    found = (await _replayers(request).get(state, "tool")).match("tool", print_)
    if found is None:
        return http.json(Answer(recorded=False))
    output = await _resolved(request.app[keys.STORE], found)
    return http.json(Answer(recorded=True, output=output, error=found.error))


@api.route(
    "POST", "/v1/runtime/tool-calls/result",
    "Record a tool call that ran: its input, output or error, and duration",
    auth="run_token", body=ToolResultBody, response=Outcome, status=201, tag="runtime",
)  # fmt: skip
async def record_tool_call(request: web.Request) -> web.Response:
    req = await http.body(request, ToolResultBody)
    fingerprint = tool_fingerprint(req.tool, req.arguments)
    store = request.app[keys.STORE]
    arguments, input_ref = await _stash(store, req.arguments)
    output, output_ref = (None, None) if req.error else await _stash(store, req.output)
    state = await _running(request)

    def build(state: RunState) -> list[ev.RunEvent]:
        own_step = not state.steps
        n = state.next_step if own_step else state.steps[-1].step_number
        call = ev.ToolCallRecorded(
            step_number=n, tool=req.tool, fingerprint=fingerprint, call_id=req.call_id,
            input=arguments, input_ref=input_ref, output=output, output_ref=output_ref,
            error=req.error[:ERROR_TEXT] if req.error else None, duration_ms=req.duration_ms,
        )  # fmt: skip
        if not own_step:
            return [call]
        started = ev.StepStarted(step_number=n, step_type="tool_call", label=req.tool)
        return [started, call, ev.StepCompleted(step_number=n, duration_ms=req.duration_ms)]

    state = await _append(request, state, build)
    return http.json(Outcome(state.run_id, state.status), 201)


@api.route(
    "POST", "/v1/runtime/tasks",
    "Before running a task (label numbered label#2… on repeats): its recorded result if this "
    "attempt replays a matching task",
    auth="run_token", body=TaskBody, response=Answer, tag="runtime",
)  # fmt: skip
async def ask_task(request: web.Request) -> web.Response:
    req = await http.body(request, TaskBody)
    state = await _running(request)
    found = (await _replayers(request).get(state, "task")).match(
        "task", task_fingerprint(req.label)
    )
    if found is None:
        return http.json(Answer(recorded=False))
    result = await _resolved(request.app[keys.STORE], found)
    return http.json(Answer(recorded=True, result=result))


@api.route(
    "POST", "/v1/runtime/tasks/result",
    "Record a finished task as a checkpoint step (or a failed one, with error)",
    auth="run_token", body=CheckpointBody, response=Outcome, status=201, tag="runtime",
)  # fmt: skip
async def record_task(request: web.Request) -> web.Response:
    req = await http.body(request, CheckpointBody)
    failed = req.error is not None
    result, ref = (None, None) if failed else await _stash(request.app[keys.STORE], req.result)
    state = await _running(request)

    def build(state: RunState) -> Sequence[ev.RunEvent]:
        return _task_events(state.next_step, req, result, ref)

    state = await _append(request, state, build)
    return http.json(Outcome(state.run_id, state.status), 201)


@api.route(
    "POST", "/v1/runtime/complete", "The agent returned: the run completes with its output",
    auth="run_token", body=CompleteBody, response=Outcome, tag="runtime",
)  # fmt: skip
async def complete(request: web.Request) -> web.Response:
    req = await http.body(request, CompleteBody)
    output, ref = await _stash(request.app[keys.STORE], req.output)
    state = await _running(request)
    state = await _append(
        request, state, lambda s: [ev.RunCompleted(output=output, output_ref=ref)]
    )
    return http.json(Outcome(state.run_id, state.status))


@api.route(
    "POST", "/v1/runtime/fail",
    "The agent raised: an error step with the traceback, then the run fails (agent_error)",
    auth="run_token", body=FailBody, response=Outcome, tag="runtime",
)  # fmt: skip
async def fail(request: web.Request) -> web.Response:
    req = await http.body(request, FailBody)
    state = await _running(request)
    text = f"{req.message}\n\n{req.traceback}".strip()[:ERROR_TEXT]

    def build(state: RunState) -> list[ev.RunEvent]:
        if state.in_flight is not None:
            raise Conflict(f"step {state.in_flight.step_number} is still in flight")
        n = state.next_step
        return [
            ev.StepStarted(step_number=n, step_type="error", label=req.error_type),
            ev.StepFailed(step_number=n, error_code="agent_error", error_message=text),
            ev.RunFailed(code="agent_error", message=f"{req.error_type}: {req.message}"),
        ]

    state = await _append(request, state, build)
    return http.json(Outcome(state.run_id, state.status))

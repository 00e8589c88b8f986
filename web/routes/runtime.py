"""The runtime API (DESIGN §7, §8): what ``python -m papayya.runtime`` calls with its run token.

Tool calls and tasks are asked about before they run: a resumed attempt gets the recording's
answer while its calls match the recording (``Replayer``, one per attempt and kind), and runs
live from the first mismatch. What ran live is then recorded with ``…/result``.

Every report is tied to the token's attempt: once that attempt is over (lost, or the run
ended), a report that was still on its way appends nothing, so it can never land in the next
attempt beside that attempt's own run of the same step. The runtime sends an
``Idempotency-Key`` with each call and the same one with its retries: a retried report
(its first answer was lost, or a 5xx came after the append committed) appends nothing again,
and a retried question gets the answer the first one got, without moving the replayer on.

Where a tool call is recorded: on the run's latest step (usually the ``tool_call`` step of the
model call that asked for it), as the fold's rules want. A tool called before any step exists
gets a ``tool_call`` step of its own, labelled with the tool's name, so no call goes unrecorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
from aiohttp import web

from eventstore.protocol import EventStore
from papayya import runtokens
from papayya.commands import checkpoint, finish, toolcall
from papayya.commands.payloads import stash
from papayya.domain import events as ev
from papayya.domain.bounds import Millis
from papayya.domain.events import Label, Name
from papayya.domain.matcher import Recorded, task_fingerprint, tool_fingerprint
from papayya.domain.state import RunState
from papayya.errors import IdempotencyConflict, InvalidInput, Unauthorized
from papayya.wire import CheckpointBody, Message
from web import gateway, http, keys
from web.openapi import api

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
MAX_KEY_LENGTH: Final = 200
# Names the events of one report: uuid5(run, attempt, route, key, index).
REPORTS: Final = uuid.UUID("5b0c6f0e-2d3c-4a59-9f57-3c1f4f3e7a21")
ONCE: Final = "; a retry with the same Idempotency-Key header is answered as the first try"
EXPIRED: Final = "invalid or expired run token (it works only while its run is running)"


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


async def _running(request: web.Request) -> RunState:
    """The token's run, running in the token's attempt; 401 otherwise. One read: the token's
    signature is checked without a query, and the run's state (caught up through the
    app's repository) answers both whether the attempt still runs and what the call needs."""
    found = runtokens.verify(request.app[keys.RUN_TOKEN_SECRET], gateway._token(request))
    if found is None:
        raise Unauthorized(EXPIRED)
    run_id, attempt = found
    state = await request.app[keys.RUNS].find(run_id)
    if state is None or state.status != "running" or state.attempt != attempt:
        raise Unauthorized(EXPIRED)
    return state


def _key(request: web.Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not (0 < len(key) <= MAX_KEY_LENGTH and key.isprintable()):
        raise InvalidInput(f"{IDEMPOTENCY_HEADER} must be 1-{MAX_KEY_LENGTH} printable characters")
    return key


def _event_ids(request: web.Request) -> list[uuid.UUID]:
    """The ids of the events a report appends, the same for each of its retries."""
    key = _key(request)
    found = runtokens.verify(request.app[keys.RUN_TOKEN_SECRET], gateway._token(request))
    if key is None or found is None:
        return []
    run_id, attempt = found
    name = f"{run_id}\n{attempt}\n{request.path}\n{key}"
    return [uuid.uuid5(REPORTS, f"{name}\n{i}") for i in range(4)]


async def _reported(request: web.Request, event_ids: list[uuid.UUID]) -> RunState | None:
    """The run, if the report with these event ids was appended already."""
    if not event_ids:
        return None
    run_id = await request.app[keys.RUN_LIST].reported(event_ids[0])
    if run_id is None:
        return None
    return await request.app[keys.RUNS].load(run_id)


async def _report(
    request: web.Request, build: Callable[[RunState], Sequence[ev.RunEvent]]
) -> RunState:
    """Append what ``build`` makes of the run, as the token's attempt, once per report.

    A retry of a report that committed is recognised by its event ids: while the attempt
    runs, by the append they collide in; once the report ended it (complete, fail), by
    looking them up. A first report pays for neither lookup."""
    event_ids = _event_ids(request)
    try:
        state = await _running(request)
    except Unauthorized:
        done = await _reported(request, event_ids)
        if done is None:
            raise
        return done
    attempt = state.attempt

    def build_current(state: RunState) -> Sequence[ev.RunEvent]:
        # The attempt may have been lost since _running (a race with the worker or sweeper).
        if state.status != "running" or state.attempt != attempt:
            raise Unauthorized(EXPIRED)
        return build(state)

    try:
        # append_fresh: the gateway's meter appends to the same run; a lost race rebuilds.
        return await request.app[keys.RUNS].append_fresh(state, build_current, event_ids)
    except IdempotencyConflict:  # a retry of this report committed first
        return await request.app[keys.RUNS].load(state.run_id)


async def _resolved(store: EventStore, found: Recorded) -> Any:
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
    heartbeats = request.app[keys.HEARTBEATS]
    await heartbeats.beat(state.run_id, state.attempt)
    if state.cancel_requested and not await heartbeats.leased(state.run_id):
        # A local run (the SDK's own process, no worker): the process hears of the request
        # now and stops, so the run ends cancelled here; there is no worker to record it.
        await request.app[keys.RUNS].append_fresh(state, _cancelled)
    return http.json(HeartbeatAck(state.run_id, state.attempt, state.cancel_requested))


def _cancelled(state: RunState) -> list[ev.RunEvent]:
    return [ev.RunCancelled(reason=state.cancel_reason)] if state.status == "running" else []


@api.route(
    "POST", "/v1/runtime/tool-calls",
    "Before running a tool: its recorded outcome if this attempt replays a matching call" + ONCE,
    auth="run_token", body=ToolCallBody, response=Answer, tag="runtime",
)  # fmt: skip
async def ask_tool_call(request: web.Request) -> web.Response:
    req = await http.body(request, ToolCallBody)
    print_ = tool_fingerprint(req.tool, req.arguments)
    state = await _running(request)
    found = await request.app[keys.RUNS].replayers.match(state, "tool", print_, _key(request))
    if found is None:
        return http.json(Answer(recorded=False))
    output = await _resolved(request.app[keys.STORE], found)
    return http.json(Answer(recorded=True, output=output, error=found.error))


@api.route(
    "POST", "/v1/runtime/tool-calls/result",
    "Record a tool call that ran: its input, output or error, and duration" + ONCE,
    auth="run_token", body=ToolResultBody, response=Outcome, status=201, tag="runtime",
)  # fmt: skip
async def record_tool_call(request: web.Request) -> web.Response:
    req = await http.body(request, ToolResultBody)
    fingerprint = tool_fingerprint(req.tool, req.arguments)
    store = request.app[keys.STORE]
    arguments, input_ref = await stash(store, req.arguments)
    output, output_ref = (None, None) if req.error else await stash(store, req.output)

    def build(state: RunState) -> list[ev.RunEvent]:
        return toolcall.tool_call_events(
            state, req.tool, fingerprint, call_id=req.call_id, input=arguments,
            input_ref=input_ref, output=output, output_ref=output_ref, error=req.error,
            duration_ms=req.duration_ms,
        )  # fmt: skip

    state = await _report(request, build)
    return http.json(Outcome(state.run_id, state.status), 201)


@api.route(
    "POST", "/v1/runtime/tasks",
    "Before running a task (label numbered label#2… on repeats): its recorded result if this "
    "attempt replays a matching task" + ONCE,
    auth="run_token", body=TaskBody, response=Answer, tag="runtime",
)  # fmt: skip
async def ask_task(request: web.Request) -> web.Response:
    req = await http.body(request, TaskBody)
    state = await _running(request)
    found = await request.app[keys.RUNS].replayers.match(
        state, "task", task_fingerprint(req.label), _key(request)
    )
    if found is None:
        return http.json(Answer(recorded=False))
    result = await _resolved(request.app[keys.STORE], found)
    return http.json(Answer(recorded=True, result=result))


@api.route(
    "POST", "/v1/runtime/tasks/result",
    "Record a finished task as a checkpoint step (or a failed one, with error)" + ONCE,
    auth="run_token", body=CheckpointBody, response=Outcome, status=201, tag="runtime",
)  # fmt: skip
async def record_task(request: web.Request) -> web.Response:
    req = await http.body(request, CheckpointBody)
    failed = req.error is not None
    result, ref = (None, None) if failed else await stash(request.app[keys.STORE], req.result)

    def build(state: RunState) -> Sequence[ev.RunEvent]:
        return checkpoint.task_events(
            state.next_step, req.label, duration_ms=req.duration_ms, result=result, ref=ref,
            error=req.error, at=req.completed_at,
        )  # fmt: skip

    state = await _report(request, build)
    return http.json(Outcome(state.run_id, state.status), 201)


@api.route(
    "POST", "/v1/runtime/complete",
    "The agent returned: the run completes with its output" + ONCE,
    auth="run_token", body=CompleteBody, response=Outcome, tag="runtime",
)  # fmt: skip
async def complete(request: web.Request) -> web.Response:
    req = await http.body(request, CompleteBody)
    output, ref = await stash(request.app[keys.STORE], req.output)
    state = await _report(request, lambda s: finish.completed(output, ref))
    return http.json(Outcome(state.run_id, state.status))


@api.route(
    "POST", "/v1/runtime/fail",
    "The agent raised: an error step with the traceback, then the run fails (agent_error)"
    + ONCE,
    auth="run_token", body=FailBody, response=Outcome, tag="runtime",
)  # fmt: skip
async def fail(request: web.Request) -> web.Response:
    req = await http.body(request, FailBody)

    def build(state: RunState) -> list[ev.RunEvent]:
        return finish.agent_raised(state, req.error_type, req.message, req.traceback)

    state = await _report(request, build)
    return http.json(Outcome(state.run_id, state.status))

"""The commands on runs, on the in-memory event store (no I/O): queueing with an idempotency
key, durable open-or-resume, checkpoint numbering and labels, ends, cancel, replay, resume, and
the run-state repository's fast-forward across two "processes" sharing one store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from eventstore.memory import InMemoryEventStore
from papayya.commands import cancel, checkpoint, durable, finish, queue, replay, resume, settle
from papayya.commands.durable import OpenRun
from papayya.commands.queue import InMemoryIdempotencyKeys, RunOptions
from papayya.commands.toolcall import tool_call_events
from papayya.domain import events as ev
from papayya.domain.defaults import UNLIMITED, ProjectDefaults
from papayya.domain.state import RunState
from papayya.errors import (
    ConcurrencyError,
    Conflict,
    IllegalTransition,
    InvalidInput,
    NotFound,
    RunNotFound,
)
from papayya.runstates import RunStates, RunView

PROJECT = "proj_a"


@dataclass(frozen=True)
class Settings:
    model: str | None = "gpt-4o-mini"
    max_steps: int | None = 10
    budget_usd: Decimal | None = Decimal("1.50")
    budget_input_tokens: int | None = None
    budget_output_tokens: int | None = None
    budget_total_tokens: int | None = 5000
    loop_threshold: int = 5
    timeout_seconds: int | None = None


@dataclass(frozen=True)
class Agent:
    id: str = "agent_1"
    project_id: str = PROJECT
    settings: Settings = field(default_factory=Settings)
    deployment_version: str | None = "3"
    project_timeout_seconds: int | None = None


@dataclass
class Agents:
    known: dict[tuple[str, str], Agent] = field(
        default_factory=lambda: {(PROJECT, "agent_1"): Agent(), (PROJECT, "helper"): Agent()}
    )

    async def find(self, project: str, ref: str) -> Agent:
        try:
            return self.known[project, ref]
        except KeyError:
            raise NotFound(f"agent {ref} not found") from None


async def hosted(project: str) -> ProjectDefaults:
    """A project's defaults as a new project has them (500 cents, 50 steps)."""
    return ProjectDefaults()


@pytest.fixture
async def store() -> AsyncIterator[InMemoryEventStore]:
    found = InMemoryEventStore()
    yield found
    await found.close()


@pytest.fixture
def runs(store: InMemoryEventStore) -> RunStates:
    return RunStates(store)


async def _queue(runs: RunStates, **options: Any) -> tuple[RunState, bool]:
    return await queue.queue_run(
        runs, InMemoryIdempotencyKeys(), Agents().find, PROJECT, "agent_1",
        RunOptions(**options), find_defaults=hosted,
    )  # fmt: skip


async def _running(runs: RunStates) -> RunState:
    state, _ = await _queue(runs)
    return await runs.append(state, [ev.RunStarted(attempt=1)])


# -- queue ----------------------------------------------------------------------------------


async def test_a_queued_run_takes_the_agents_config_where_the_request_is_silent(
    runs: RunStates,
) -> None:
    state, created = await _queue(runs, max_steps=3, input={"q": 1})
    assert created and state.status == "queued" and state.version == 1
    assert state.max_steps == 3  # the request's
    assert state.budget.micro_usd == 1_500_000  # the agent's $1.50
    assert state.budget.total_tokens == 5000
    assert state.metadata[queue.MODEL_KEY] == "gpt-4o-mini"
    assert state.deployment_version == "3" and state.trigger == "api"
    assert (await runs.load(state.run_id)).input == {"q": 1}
    assert state.timeout_seconds == 3600  # nobody set one: the built-in hour, recorded


async def test_a_runs_time_limit_is_the_requests_then_the_agents_then_the_projects() -> None:
    def limit(sent: int | None, agent: int | None, project: int | None) -> int | None:
        found = Agent(settings=Settings(timeout_seconds=agent), project_timeout_seconds=project)
        return queue.run_of_agent(
            "r", found, RunOptions(timeout_seconds=sent), ProjectDefaults()
        ).timeout_seconds

    assert limit(5, 60, 600) == 5
    assert limit(None, 60, 600) == 60
    assert limit(None, None, 600) == 600
    assert limit(None, None, None) == 3600
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"timeout_seconds": 0}, RunOptions)


async def test_an_idempotency_key_names_one_run_whatever_the_later_requests_say(
    runs: RunStates,
) -> None:
    keys = InMemoryIdempotencyKeys()
    agents = Agents()

    async def post(key: str, **options: Any) -> tuple[RunState, bool]:
        req = RunOptions(idempotency_key=key, **options)
        return await queue.queue_run(
            runs, keys, agents.find, PROJECT, "agent_1", req, find_defaults=hosted
        )

    first, created = await post("k1", input="first")
    again, created_again = await post("k1", input="second")
    other, created_other = await post("k2", input="first")
    assert created and not created_again and created_other
    assert again.run_id == first.run_id and again.input == "first"
    assert other.run_id != first.run_id
    assert again.version == 1  # nothing appended by the repeat


async def test_a_key_claimed_by_a_request_that_died_before_appending_is_completed_by_the_next(
    runs: RunStates,
) -> None:
    keys = InMemoryIdempotencyKeys()
    assert await keys.claim(PROJECT, "k", "run_orphan")  # claimed, never appended
    req = RunOptions(idempotency_key="k")
    state, created = await queue.queue_run(
        runs, keys, Agents().find, PROJECT, "agent_1", req, find_defaults=hosted
    )
    assert not created and state.run_id == "run_orphan" and state.status == "queued"


async def test_reserved_metadata_and_unknown_agents_are_refused_before_anything_is_written(
    runs: RunStates, store: InMemoryEventStore
) -> None:
    with pytest.raises(InvalidInput):
        await _queue(runs, metadata={"papayya.model": "x"})
    with pytest.raises(NotFound):
        await queue.queue_run(
            runs, InMemoryIdempotencyKeys(), Agents().find, PROJECT, "nobody", RunOptions(),
            find_defaults=hosted,
        )  # fmt: skip
    assert (await store.read_all()).events == []


async def test_trigger_metadata_joins_the_runs_metadata(runs: RunStates) -> None:
    state, _ = await queue.queue_run(
        runs, InMemoryIdempotencyKeys(), Agents().find, PROJECT, "agent_1", RunOptions(),
        trigger="schedule", run_id="run_fixed", trigger_metadata={"papayya.schedule_id": "s1"},
        find_defaults=hosted,
    )  # fmt: skip
    assert state.run_id == "run_fixed" and state.trigger == "schedule"
    assert state.metadata["papayya.schedule_id"] == "s1"


async def test_limits_come_from_the_run_else_the_agent_else_the_project(
    runs: RunStates,
) -> None:
    silent = Agent(settings=Settings(max_steps=None, budget_usd=None))
    agents = Agents(known={(PROJECT, "silent"): silent, (PROJECT, "agent_1"): Agent()})

    async def post(agent: str, defaults: ProjectDefaults, **options: Any) -> RunState:
        async def find_defaults(project: str) -> ProjectDefaults:
            assert project == PROJECT
            return defaults

        state, _ = await queue.queue_run(
            runs, InMemoryIdempotencyKeys(), agents.find, PROJECT, agent,
            RunOptions(**options), find_defaults=find_defaults,
        )  # fmt: skip
        return state

    hosted_values = await post("silent", ProjectDefaults())
    assert (hosted_values.budget.micro_usd, hosted_values.max_steps) == (5_000_000, 50)
    project = await post("silent", ProjectDefaults(budget_cents=120, max_steps=7))
    assert (project.budget.micro_usd, project.max_steps) == (1_200_000, 7)
    agent = await post("agent_1", ProjectDefaults(budget_cents=120, max_steps=7))
    assert (agent.budget.micro_usd, agent.max_steps) == (1_500_000, 10)  # the agent's
    own = await post("agent_1", ProjectDefaults(), budget_cents=3, max_steps=2)
    assert (own.budget.micro_usd, own.max_steps) == (30_000, 2)  # the run's
    zero = await post("agent_1", ProjectDefaults(), budget_cents=0)
    assert zero.budget.micro_usd == 0  # a stated 0 is a limit, not "unsaid"
    unlimited = await post("silent", UNLIMITED)
    assert (unlimited.budget.micro_usd, unlimited.max_steps) == (None, None)
    events = [e for e in (await runs.events(hosted_values.run_id)) if isinstance(e, ev.RunQueued)]
    assert (events[0].budget_micro_usd, events[0].max_steps) == (5_000_000, 50)


async def test_a_durable_open_takes_the_projects_budget_where_it_is_silent_not_its_steps(
    runs: RunStates,
) -> None:
    # Its steps are the caller's own checkpoints: only a max_steps it states limits them.
    view, _ = await durable.open_or_resume(runs, _spec(defaults=ProjectDefaults()))
    assert (view.state.budget.micro_usd, view.state.max_steps) == (5_000_000, None)
    stated = _spec(run_id="proj_a:r2", defaults=ProjectDefaults(), budget_micro_usd=7,
                   max_steps=3)  # fmt: skip
    view, _ = await durable.open_or_resume(runs, stated)
    assert (view.state.budget.micro_usd, view.state.max_steps) == (7, 3)
    view, _ = await durable.open_or_resume(runs, _spec(run_id="proj_a:r3"))  # UNLIMITED
    assert (view.state.budget.micro_usd, view.state.max_steps) == (None, None)


# -- cancel, resume, replay -----------------------------------------------------------------


async def test_cancel_ends_a_queued_run_and_asks_a_running_one_to_stop(runs: RunStates) -> None:
    queued, _ = await _queue(runs)
    ended = await cancel.cancel_run(runs, PROJECT, queued.run_id, "no longer needed")
    assert ended.status == "cancelled" and ended.cancel_reason == "no longer needed"

    running = await _running(runs)
    asked = await cancel.cancel_run(runs, PROJECT, running.run_id, None)
    assert asked.status == "running" and asked.cancel_requested
    again = await cancel.cancel_run(runs, PROJECT, running.run_id, None)
    assert again.version == asked.version  # asked once is enough


async def test_cancelling_an_ended_run_is_a_conflict_and_writes_nothing(runs: RunStates) -> None:
    running = await _running(runs)
    done = await finish.complete_run(runs, running, "ok")
    with pytest.raises(Conflict):
        await cancel.cancel_run(runs, PROJECT, running.run_id, None)
    assert (await runs.load(running.run_id)).version == done.version


async def test_another_projects_run_answers_as_a_missing_one(runs: RunStates) -> None:
    state, _ = await _queue(runs)
    with pytest.raises(RunNotFound):
        await cancel.cancel_run(runs, "proj_b", state.run_id, None)
    with pytest.raises(RunNotFound):
        await replay.replay_run(runs, Agents().find, "proj_b", state.run_id, 0)
    with pytest.raises(RunNotFound):
        await resume.resume_run(runs, "proj_b", state.run_id, budget_cents=100)
    assert (await runs.load(state.run_id)).version == 1


async def test_resume_wants_a_new_budget_and_a_budget_exceeded_run(runs: RunStates) -> None:
    running = await _running(runs)
    with pytest.raises(InvalidInput):
        await resume.resume_run(runs, PROJECT, running.run_id)
    with pytest.raises(IllegalTransition):
        await resume.resume_run(runs, PROJECT, running.run_id, budget_cents=500)
    exceeded = await runs.append(running, [ev.BudgetExceeded(message="spent")])
    resumed = await resume.resume_run(runs, PROJECT, running.run_id, budget_cents=500)
    assert exceeded.status == "budget_exceeded" and resumed.status == "queued"
    assert resumed.budget.micro_usd == 5_000_000


async def test_replay_links_a_new_run_and_checks_the_deployment(runs: RunStates) -> None:
    running = await _running(runs)
    await checkpoint.record_checkpoint(runs, running, "a", duration_ms=1.0, result=1)
    source = await runs.load(running.run_id)
    with pytest.raises(InvalidInput):
        await replay.replay_run(runs, Agents().find, PROJECT, source.run_id, 2)
    copy = await replay.replay_run(runs, Agents().find, PROJECT, source.run_id, 1, input="new")
    assert copy.replayed_from == source.run_id and copy.replay_from_step == 1
    assert copy.input == "new" and copy.trigger == "replay" and copy.status == "queued"

    moved = Agents()
    moved.known[PROJECT, "agent_1"] = Agent(deployment_version="4")
    with pytest.raises(Conflict):
        await replay.replay_run(runs, moved.find, PROJECT, source.run_id, 0)
    anyway = await replay.replay_run(
        runs, moved.find, PROJECT, source.run_id, 0, allow_version_mismatch=True
    )
    assert anyway.deployment_version == "4"


async def test_a_replay_keeps_its_sources_steps_before_from_step_with_their_numbers(
    runs: RunStates,
) -> None:
    running = await _running(runs)
    call = {"id": "c1", "name": "lookup", "arguments": {"city": "Paris"}}
    model = ev.LlmCallRecorded(
        step_number=0, provider="openai", model="gpt-4o", fingerprint="f0", input_tokens=9,
        cost_micro_usd=70, tool_calls=(call,),
    )  # fmt: skip
    state = await runs.append(
        running,
        [ev.StepStarted(step_number=0, step_type="tool_call"), model,
         ev.StepCompleted(step_number=0)],
    )  # fmt: skip
    state = await checkpoint.record_checkpoint(runs, state, "pick", duration_ms=1.0, result="P")
    ran = tool_call_events(state, "lookup", "fp", call_id="c1", input={"city": "P"}, output=2)
    state = await runs.append(state, ran)
    state = await checkpoint.record_checkpoint(runs, state, "later", duration_ms=1.0, result=3)

    copy = await replay.replay_run(runs, Agents().find, PROJECT, state.run_id, 2)
    assert copy.status == "queued" and copy.next_step == 2
    assert [(s.step_number, s.step_type, s.replayed) for s in copy.steps] == [
        (0, "tool_call", True),
        (1, "checkpoint", True),
    ]
    assert [c.tool for c in copy.steps[0].tool_calls] == ["lookup"]  # under the model step
    assert copy.steps[1].output == "P" and copy.usage.cost_micro_usd == 0
    # Its recording is its own now: the same calls, in the source's order, up to from_step.
    events = await runs.events(copy.run_id)
    recording = await runs.recording(copy, events, frozenset({"llm", "tool", "task"}))
    assert [(c.step_number, c.kind) for c in recording.calls] == [
        (0, "llm"), (1, "task"), (1, "tool")
    ]  # fmt: skip
    assert not recording.copied
    # The replay's own steps continue the numbering once it runs.
    started = await runs.append(copy, [ev.RunStarted(attempt=1)])
    after = await checkpoint.record_checkpoint(runs, started, "new", duration_ms=1.0, result=0)
    assert [(s.step_number, s.replayed) for s in after.steps][2:] == [(2, False)]
    with pytest.raises(IllegalTransition, match="copies"):
        await runs.append(after, [ev.StepStarted(step_number=3, step_type="response",
                                                 replayed=True)])  # fmt: skip
    # From step 0, nothing is copied.
    assert (await replay.replay_run(runs, Agents().find, PROJECT, state.run_id, 0)).steps == ()


# -- durable open or resume -----------------------------------------------------------------


def _spec(**fields: object) -> OpenRun:
    values: dict[str, object] = {
        "run_id": "proj_a:r1", "project_id": PROJECT, "agent": "bot", "defaults": UNLIMITED
    }  # fmt: skip
    return OpenRun(**{**values, **fields})  # type: ignore[arg-type]


async def test_open_creates_then_resumes_as_a_new_attempt(runs: RunStates) -> None:
    view, created = await durable.open_or_resume(runs, _spec(input=1, metadata={"item_id": "x"}))
    assert created and view.state.status == "running" and view.state.attempt == 1
    assert view.state.metadata == {"item_id": "x"} and view.state.trigger == "sdk"
    again, created_again = await durable.open_or_resume(runs, _spec())
    assert not created_again and again.state.attempt == 2


async def test_a_retried_open_is_answered_as_the_first_and_starts_no_attempt(
    runs: RunStates,
) -> None:
    first, created = await durable.open_or_resume(runs, _spec(idempotency_key="o1"))
    retry, created_retry = await durable.open_or_resume(runs, _spec(idempotency_key="o1"))
    assert created and created_retry  # answered as the first (which created it)
    assert retry.state.attempt == 1 and retry.state.version == first.state.version
    later, created_later = await durable.open_or_resume(runs, _spec(idempotency_key="o2"))
    assert not created_later and later.state.attempt == 2
    # The key of the open that started the current attempt is known from the events alone.
    fresh = await RunStates(runs.store).view("proj_a:r1")
    assert fresh is not None and fresh.start_key == "o2" and not fresh.start_created


async def test_open_refuses_another_agent_and_an_id_another_project_took(runs: RunStates) -> None:
    await durable.open_or_resume(runs, _spec())
    with pytest.raises(InvalidInput):
        await durable.open_or_resume(runs, _spec(agent="other"))
    with pytest.raises(Conflict):
        await durable.open_or_resume(runs, _spec(project_id="proj_b"))
    # The SDK's direct mode runs any project's run.
    view, _ = await durable.open_or_resume(runs, _spec(project_id="local", check_project=False))
    assert view.state.attempt == 2


async def test_an_ended_run_opens_as_it_is(runs: RunStates) -> None:
    view, _ = await durable.open_or_resume(runs, _spec())
    await finish.complete_run(runs, view.state, "done")
    again, created = await durable.open_or_resume(runs, _spec())
    assert not created and again.state.status == "completed" and again.state.attempt == 1


async def test_a_new_attempt_settles_the_calls_the_crashed_one_had_in_flight(
    runs: RunStates,
) -> None:
    view, _ = await durable.open_or_resume(runs, _spec(budget_micro_usd=1_000_000))
    held = ev.BudgetReserved(reservation_id="c1", amount_micro_usd=300)
    await runs.append(view.state, [held])
    again, _ = await durable.open_or_resume(runs, _spec())
    assert again.state.reservations == () and again.state.attempt == 2
    assert again.state.committed.micro_usd == 300  # counted at its worst case


async def test_a_project_finds_its_run_by_its_own_id_and_never_anothers(runs: RunStates) -> None:
    await durable.open_or_resume(runs, _spec())
    stored, view = await durable.find(runs, "r1", PROJECT)
    assert stored == "proj_a:r1" and view is not None
    assert durable.public_id(PROJECT, stored) == "r1"
    with pytest.raises(RunNotFound):
        await durable.own(runs, "r1", "proj_b")


# -- checkpoints, tool calls, ends ----------------------------------------------------------


async def test_checkpoints_are_numbered_in_order_and_keep_their_labels(runs: RunStates) -> None:
    view, _ = await durable.open_or_resume(runs, _spec())
    state = await checkpoint.record_checkpoint(runs, view.state, "a", duration_ms=1, result=1)
    state = await checkpoint.record_checkpoint(runs, state, "b", duration_ms=1, error="boom")
    state = await checkpoint.record_checkpoint(runs, state, "a#2", duration_ms=1, result=2)
    steps = state.steps
    assert [(s.step_number, s.label, s.status) for s in steps] == [
        (0, "a", "completed"), (1, "b", "failed"), (2, "a#2", "completed"),
    ]  # fmt: skip
    assert steps[1].error_code == checkpoint.TASK_ERROR and steps[0].output == 1

    cached = await runs.view(state.run_id)
    assert cached is not None
    assert checkpoint.recorded_task(cached.state, cached.tasks, "a", False) == steps[0]
    assert checkpoint.recorded_task(cached.state, cached.tasks, "b", True) == steps[1]
    assert checkpoint.recorded_task(cached.state, cached.tasks, "b", False) is None
    # A new attempt has recorded none of its tasks yet.
    again, _ = await durable.open_or_resume(runs, _spec())
    assert checkpoint.recorded_task(again.state, again.tasks, "a", False) is None


async def test_a_checkpoint_decided_on_a_stale_state_is_numbered_after_the_other_writer(
    runs: RunStates, store: InMemoryEventStore
) -> None:
    view, _ = await durable.open_or_resume(runs, _spec())
    other = RunStates(store)  # another process writing the same run
    await checkpoint.record_checkpoint(runs, view.state, "mine", duration_ms=1)
    stale = await other.load(view.state.run_id)
    await checkpoint.record_checkpoint(runs, await runs.load(stale.run_id), "first", duration_ms=1)
    state = await checkpoint.record_checkpoint(other, stale, "second", duration_ms=1)
    assert [s.label for s in state.steps] == ["mine", "first", "second"]


async def test_a_tool_call_joins_the_latest_step_or_gets_one_of_its_own(runs: RunStates) -> None:
    running = await _running(runs)
    own = tool_call_events(running, "search", "fp", input={"q": 1}, duration_ms=2.0)
    assert [type(e) for e in own] == [ev.StepStarted, ev.ToolCallRecorded, ev.StepCompleted]
    state = await runs.append(running, own)
    joined = tool_call_events(state, "fetch", "fp2", error="x" * 200_000)
    assert len(joined) == 1 and isinstance(joined[0], ev.ToolCallRecorded)
    assert joined[0].step_number == 0 and len(joined[0].error or "") == 100_000


async def test_a_second_complete_is_a_no_op_only_with_the_same_output(runs: RunStates) -> None:
    running = await _running(runs)
    done = await finish.complete_run(runs, running, "first")
    again = await finish.complete_run(runs, running, "first")  # decided on a stale state
    assert again.version == done.version and again.output == "first"
    with pytest.raises(Conflict, match="another output"):
        await finish.complete_run(runs, running, "second")
    with pytest.raises(Conflict):
        await finish.fail_run(runs, running, "agent_error", "late")


async def test_an_agent_that_raised_gets_an_error_step_then_fails(runs: RunStates) -> None:
    running = await _running(runs)
    events = finish.agent_raised(running, "ValueError", "bad", "Traceback ...")
    state = await runs.append(running, events)
    assert state.status == "failed" and state.error_code == "agent_error"
    assert state.steps[-1].step_type == "error" and "Traceback" in (
        state.steps[-1].error_message or ""
    )


async def test_an_attempt_that_ended_without_reporting_is_recorded_once(runs: RunStates) -> None:
    running = await _running(runs)

    def outcome(state: RunState) -> list[ev.RunEvent]:
        if state.status != "running":
            return []
        return [ev.RunFailed(code="runtime_error", message="exited")]

    assert await settle.end_attempt(runs, running.run_id, outcome, wait=600.0)
    assert await settle.end_attempt(runs, running.run_id, outcome, wait=600.0)
    state = await runs.load(running.run_id)
    assert state.status == "failed" and state.version == running.version + 1


# -- the repository -------------------------------------------------------------------------


async def test_a_cached_run_is_fast_forwarded_with_what_another_process_appended(
    runs: RunStates, store: InMemoryEventStore
) -> None:
    running = await _running(runs)
    other = RunStates(store)
    await other.append(await other.load(running.run_id), [ev.CancelRequested(reason="x")])
    assert runs.cached(running.run_id) is not None
    assert runs.cached(running.run_id).state.cancel_requested is False  # type: ignore[union-attr]
    fresh = await runs.load(running.run_id)
    assert fresh.cancel_requested and fresh.version == running.version + 1


async def test_an_append_on_a_stale_state_loses_and_execute_decides_again(
    runs: RunStates, store: InMemoryEventStore
) -> None:
    running = await _running(runs)
    other = RunStates(store)
    await other.append(await other.load(running.run_id), [ev.CancelRequested(reason="x")])
    with pytest.raises(ConcurrencyError):
        await runs.append(running, [ev.RunCompleted(output=1)])
    seen: list[int] = []

    def decide(state: RunState) -> list[ev.RunEvent]:
        seen.append(state.version)
        return [ev.RunCancelled(reason=state.cancel_reason)]

    ended = await runs.execute(running.run_id, decide)
    assert seen == [running.version + 1] and ended.status == "cancelled"


async def test_the_cache_is_bounded_and_an_evicted_run_is_read_again(
    store: InMemoryEventStore,
) -> None:
    runs = RunStates(store, size=2)
    ids = [(await _queue(runs))[0].run_id for _ in range(3)]
    assert runs.cached(ids[0]) is None and runs.cached(ids[2]) is not None
    assert (await runs.load(ids[0])).status == "queued"
    with pytest.raises(RunNotFound):
        await runs.load("run_missing")


async def test_a_labelled_task_is_recorded_once_per_attempt_even_from_a_stale_view(
    runs: RunStates, store: InMemoryEventStore
) -> None:
    view, _ = await durable.open_or_resume(runs, _spec())
    run_id = view.state.run_id

    def events_for(label: str) -> Callable[[int], list[checkpoint.TaskEvent]]:
        return lambda n: checkpoint.task_events(n, label, duration_ms=1.0, result=label)

    async def reload() -> RunView:
        return await durable.own(runs, "r1", PROJECT)

    first, step, created = await checkpoint.record_once(
        runs, view, reload, "a", False, events_for("a")
    )
    assert created and step.step_number == 0
    # Another process records "b" meanwhile; this one still holds the view from before it.
    other = RunStates(store)
    await checkpoint.record_checkpoint(other, await other.load(run_id), "b", duration_ms=1)
    again, same, created_again = await checkpoint.record_once(
        runs, first, reload, "a", False, events_for("a")
    )
    assert not created_again and same == step and again.state.version == first.state.version
    _, c, created_c = await checkpoint.record_once(runs, first, reload, "c", False, events_for("c"))
    assert created_c and c.step_number == 2  # numbered after "b", found on reload
    await finish.complete_run(runs, await runs.load(run_id), None)
    with pytest.raises(Conflict):
        await checkpoint.record_once(runs, await reload(), reload, "d", False, events_for("d"))


async def test_a_retried_report_the_store_recognises_leaves_the_cached_run_as_stored(
    runs: RunStates,
) -> None:
    running = await _running(runs)
    state = await checkpoint.record_checkpoint(runs, running, "a", duration_ms=1.0)
    call = ev.ToolCallRecorded(
        step_number=0, tool="search", fingerprint="fp", at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    report = [uuid.uuid4()]
    first = await runs.append(state, [call], event_ids=report)
    # The retry is decided on the state after the first (its answer was lost): the store
    # answers it with the first append's result and writes nothing.
    again = await runs.append(first, [call], event_ids=report)
    assert again.version == first.version and len(again.steps[0].tool_calls) == 1
    assert (await runs.load(first.run_id)) == again

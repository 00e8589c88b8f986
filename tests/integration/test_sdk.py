"""The local SDK against real Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from papayya import papayya
from papayya.errors import Conflict, InvalidInput, RunNotFound
from papayya.sdk import Papayya


@pytest.fixture
def client(dsn: str) -> Iterator[Papayya]:
    c = papayya(dsn)
    yield c
    c.close()


def test_tasks_are_checkpointed_and_answered_on_resume(client: Papayya) -> None:
    calls: list[str] = []

    def search() -> dict[str, int]:
        calls.append("search")
        return {"hits": len(calls)}

    run = client.run("my-agent", run_id="r1", metadata={"user": "u1"})
    assert run.status == "running" and run.id == "r1"
    assert run.task("search", search)() == {"hits": 1}
    assert run.task("search", search)() == {"hits": 2}  # a repeat runs again as search#2
    assert run.task(search)() == {"hits": 3}  # label from the function name
    steps = run.state.steps
    assert [s.label for s in steps] == ["search", "search#2", "search#3"]
    assert all(s.step_type == "checkpoint" and s.status == "completed" for s in steps)

    again = client.run("my-agent", run_id="r1")
    assert again.state.attempt == 2
    assert again.task("search", search)() == {"hits": 1}
    assert again.task("search", search)() == {"hits": 2}
    assert again.task(search)() == {"hits": 3}
    assert calls == ["search"] * 3  # nothing ran twice
    assert again.task("summarise", lambda: "new")() == "new"  # past the recording: live
    again.complete({"answer": 42})
    assert again.status == "completed"
    done = client.run("my-agent", run_id="r1")
    assert done.status == "completed" and done.state.output == {"answer": 42}
    done.complete({"answer": 42})  # completing again is a no-op
    with pytest.raises(Conflict):
        done.task("more", lambda: 1)()


def test_decorator_and_coroutine_tasks(client: Papayya) -> None:
    run = client.run("agent-a", run_id="r2")

    @run.task("double")
    def double(x: int) -> int:
        return x * 2

    async def fetch() -> list[int]:
        await asyncio.sleep(0)
        return [1, 2]

    assert double(4) == 8 and double(5) == 10
    assert asyncio.run(run.task("fetch", fetch)()) == [1, 2]
    assert [s.label for s in run.state.steps] == ["double", "double#2", "fetch"]
    resumed = client.run("agent-a", run_id="r2")
    assert resumed.task("double", lambda: -1)() == 8


def test_divergence_goes_live_from_the_first_mismatch(client: Papayya) -> None:
    run = client.run("agent-a", run_id="r3")
    run.task("a", lambda: 1)()
    run.task("b", lambda: 2)()
    resumed = client.run("agent-a", run_id="r3")
    assert resumed.task("a", lambda: 100)() == 1
    assert resumed.task("c", lambda: 3)() == 3  # differs from the recording: live
    assert resumed.diverged_at_step == 1
    assert resumed.task("b", lambda: 200)() == 200  # everything after a divergence is live


def test_unserialisable_result_is_refused_before_writing(client: Papayya) -> None:
    run = client.run("agent-a", run_id="r4")
    with pytest.raises(InvalidInput, match="not JSON-serialisable"):
        run.task("bad", lambda: object())()
    assert run.state.steps == ()
    assert client.run("agent-a", run_id="r4").state.steps == ()


def test_failing_task_is_recorded_and_runs_again_on_resume(client: Papayya) -> None:
    run = client.run("agent-a", run_id="r5")
    with pytest.raises(ZeroDivisionError):
        run.task("boom", lambda: 1 / 0)()
    step = run.state.steps[0]
    assert step.status == "failed" and "ZeroDivisionError" in (step.error_message or "")
    resumed = client.run("agent-a", run_id="r5")
    assert resumed.task("boom", lambda: "fixed")() == "fixed"


def test_large_results_go_to_payloads(client: Papayya) -> None:
    big = {"text": "x" * 50_000}
    run = client.run("agent-a", run_id="r6")
    assert run.task("big", lambda: big)() == big
    assert (run.state.steps[0].output_ref or "").startswith("sha256:")
    assert client.run("agent-a", run_id="r6").task("big", lambda: None)() == big


def test_replay_answers_steps_before_n_from_the_source(client: Papayya) -> None:
    source = client.run("agent-a", run_id="src")
    for i in range(4):
        source.task(f"t{i}", lambda i=i: i)()
    source.complete("done")
    ran: list[int] = []

    def live(i: int) -> int:
        ran.append(i)
        return i * 10

    replay = client.run("agent-a", run_id="rep", replay_of="src", from_step=2)
    results = [replay.task(f"t{i}", lambda i=i: live(i))() for i in range(4)]
    assert results == [0, 1, 20, 30] and ran == [2, 3]
    assert replay.state.replayed_from == "src" and replay.state.replay_from_step == 2
    assert [s.output for s in replay.state.steps] == [0, 1, 20, 30]
    assert client.run("agent-a", run_id="src").state.steps[2].output == 2  # untouched


def test_fail_and_context_manager(client: Papayya) -> None:
    with pytest.raises(ValueError), client.run("agent-a", run_id="r7") as run:
        raise ValueError("bad thing")
    assert run.status == "failed" and "bad thing" in (run.state.error_message or "")


def test_bad_input(client: Papayya) -> None:
    with pytest.raises(InvalidInput):
        client.run("")
    with pytest.raises(InvalidInput):
        client.run("a", budget_usd="lots")
    with pytest.raises(InvalidInput):
        client.run("a", budget_usd=-1)
    with pytest.raises(InvalidInput):
        client.run("a", replay_of="x")
    with pytest.raises(RunNotFound):
        client.run("a", replay_of="missing", from_step=0)
    run = client.run("agent-a", run_id="r8")
    with pytest.raises(InvalidInput):
        client.run("other-agent", run_id="r8")
    with pytest.raises(InvalidInput):
        run.task(42)  # type: ignore[call-overload]
    with pytest.raises(InvalidInput):
        run.task("label", "not callable")  # type: ignore[call-overload]
    with pytest.raises(InvalidInput):
        run.task("ends#2", lambda: 1)
    with pytest.raises(InvalidInput):
        run.complete(object())
    assert run.state.steps == () and run.status == "running"


async def test_a_queued_replay_run_answers_from_its_source(dsn: str) -> None:
    from eventstore import PostgresEventStore
    from papayya.domain import events as ev
    from papayya.runs import Runs

    with papayya(dsn) as client:
        source = client.run("agent-a", run_id="src2")
        for i in range(3):
            source.task(f"t{i}", lambda i=i: i)()
        source.complete()
    store = await PostgresEventStore.connect(dsn)
    try:
        # Direct-mode runs belong to the default project (created by the first open).
        project = await store.pool.fetchval("SELECT project_id FROM projects WHERE name='default'")
        assert project is not None
        queued = ev.RunQueued(
            run_id="rep2",
            project_id=project,
            agent_id="agent-a",
            replayed_from="src2",
            replay_from_step=2,
        )
        await Runs(store).queue(queued)
    finally:
        await store.close()

    def run_replay() -> list[int]:
        with papayya(dsn) as client:
            replay = client.run("agent-a", run_id="rep2")
            return [replay.task(f"t{i}", lambda i=i: i * 100)() for i in range(3)]

    assert await asyncio.to_thread(run_replay) == [0, 1, 200]

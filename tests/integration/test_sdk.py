"""The local SDK against real Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from papayya import papayya
from papayya.errors import Conflict, InvalidInput, InvalidTask, RunNotFound
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
    # As published: TypeError for what is not a task, ValueError for a label it cannot have.
    with pytest.raises(InvalidTask) as caught:
        run.task(42)  # type: ignore[call-overload]
    assert isinstance(caught.value, TypeError)
    with pytest.raises(InvalidTask):
        run.task("label", "not callable")  # type: ignore[call-overload]
    for label in ("ends#2", "", "x" * 300):
        with pytest.raises(InvalidTask) as caught:
            run.task(label, lambda: 1)
        assert isinstance(caught.value, ValueError)
    with pytest.raises(ValueError, match="need a label"):
        run.task(lambda: 1)
    with pytest.raises(InvalidTask):
        run.task("a", lambda: 1, item_id="")
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


def test_kind_llm_keeps_the_usage_of_official_clients_responses(client: Papayya, dsn: str) -> None:
    import anthropic
    import openai

    from fakellm.config import FakeConfig
    from fakellm.testing import running_fake_in_thread

    question = [{"role": "user", "content": "hello?"}]
    with running_fake_in_thread(FakeConfig(text="hi there")) as fake:
        oa = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-fake", max_retries=0)
        an = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="sk-fake")
        run = client.run("agent-a", run_id="llm", item_id="ticket-9")
        chat = run.task(
            "chat", lambda: oa.chat.completions.create(model="gpt-4o-mini", messages=question),
            kind="llm",
        )()  # fmt: skip
        said = run.step(
            "say", lambda: an.messages.create(
                model="claude-3-5-haiku-latest", max_tokens=50, messages=question
            ), kind="llm",
        )()  # fmt: skip
        result = run.complete([chat.choices[0].message.content, said.content[0].text])
        assert fake.stats.by_route["/v1/chat/completions"] == 1
        chat_entry, say_entry = result.tasks
        assert (chat_entry.kind, chat_entry.llm_provider_shape) == ("llm", "openai")
        assert chat_entry.llm_prompt_tokens == chat.usage.prompt_tokens > 0
        assert chat_entry.llm_completion_tokens == chat.usage.completion_tokens > 0
        assert chat_entry.llm_total_tokens == chat.usage.total_tokens
        assert (chat_entry.llm_model, chat_entry.llm_stop_reason) == ("gpt-4o-mini", "stop")
        assert say_entry.llm_provider_shape == "anthropic"
        assert say_entry.llm_stop_reason == "end_turn"
        assert say_entry.llm_prompt_tokens == said.usage.input_tokens > 0
        assert say_entry.llm_total_tokens == said.usage.input_tokens + said.usage.output_tokens
        # The item id is the run's; with it in effect the result is also the output snapshot.
        assert chat_entry.item_id == "ticket-9"
        assert chat_entry.output_snapshot == chat.model_dump(mode="json")

        # A resumed run answers from the recording, as the JSON of the response, and the
        # context stays with the step as the durable API keeps it.
        resumed = client.run("agent-a", run_id="llm")
        again = resumed.task("chat", lambda: pytest.fail("called again"), kind="llm")()
        assert again == chat.model_dump(mode="json")
        assert fake.stats.by_route["/v1/chat/completions"] == 1
    context = asyncio.run(step_contexts(dsn, "llm"))
    assert context[0]["kind"] == "llm" and context[0]["item_id"] == "ticket-9"
    assert context[0]["llm"]["prompt_tokens"] == chat.usage.prompt_tokens
    assert context[1]["llm"]["provider_shape"] == "anthropic"
    assert context[0]["output_snapshot"] == chat.model_dump(mode="json")


async def step_contexts(dsn: str, run_id: str) -> dict[int, Any]:
    from eventstore import PostgresEventStore
    from papayya.runstates import RunStates

    store = await PostgresEventStore.connect(dsn)
    try:
        view = await RunStates(store).view(run_id)
        assert view is not None
        return dict(view.context)
    finally:
        await store.close()


def test_the_published_result_shapes(client: Papayya) -> None:
    run = client.run("agent-a", run_id="shapes")
    assert (run.run_id, run.agent, run.completed_tasks) == ("shapes", "agent-a", [])
    run.task("a", lambda: 1)()
    with pytest.raises(ValueError, match="boom"):
        run.task("b", lambda: (_ for _ in ()).throw(ValueError("boom")))()
    result = run.fail(ValueError("gave up"))
    assert (result.run_id, result.agent, result.status) == ("shapes", "agent-a", "failed")
    assert [t.label for t in result.tasks] == ["a"] and run.completed_tasks == ["a"]
    assert run.state.error_message == "ValueError: gave up"
    with pytest.raises(RuntimeError):
        run.task("c", lambda: 1)()
    with pytest.raises(RuntimeError):
        run.complete()
    # Another process that completes the run with another output is refused, as the API does.
    done = client.run("agent-a", run_id="done")
    done.complete({"n": 1})
    again = client.run("agent-a", run_id="done")
    assert again.complete({"n": 1}).status == "completed"  # the same end: a no-op
    with pytest.raises(Conflict):
        client.run("agent-a", run_id="done").complete({"n": 2})


def test_bulky_snapshots_go_to_payloads_as_the_api_keeps_them(client: Papayya, dsn: str) -> None:
    big = {"text": "x" * 50_000}
    run = client.run("agent-a", run_id="snap", item_id="doc-1")
    assert run.task("read", lambda: big, snapshot={"page": 1})() == big
    [context] = asyncio.run(step_contexts(dsn, "snap")).values()
    assert context["item_id"] == "doc-1" and context["input_snapshot"] == {"page": 1}
    assert "output_snapshot" not in context
    assert context["output_snapshot_ref"].startswith("sha256:")

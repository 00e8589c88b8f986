"""The durable scenarios under both clients: the published SDK and our package run the same
script against the same server, and are held to one behaviour. Where ours differs on purpose
(docs/compatibility.md), the test says so with the answer each one gives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fakellm.config import Errors
from fakellm.testing import FakeServer, running_fake
from tests.support.api import Api
from tests.support.durable_clients import Ours, ScriptClient, durable_run
from tests.support.published import Published

pytestmark = pytest.mark.timeout(120)

PRELUDE = """
import json, os, sys
from papayya.durable import papayya
client = papayya()
"""


@pytest.fixture(params=["published", "ours"])
def which(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(which: str, published: Published, api: Api, tmp_path: Path) -> ScriptClient:
    return published if which == "published" else Ours(api.url, api.key, tmp_path)


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with running_fake() as running:
        yield running


async def test_calling_conventions_and_complete(
    client: ScriptClient, api: Api, http: aiohttp.ClientSession
) -> None:
    answer = await client.script(
        PRELUDE
        + """
run = client.run(agent="researcher", run_id="r-1")
search = run.step("search", lambda q: {"hits": [q, q]})
hits = search("papayya")
summary = run.task("summarize", lambda h: len(h["hits"]))(hits)

@run.step("shout")
def shout(text):
    return text.upper()

def named(a, b=0):
    return a + b

loud = shout("x")
total = run.task(named)(1, b=2)
result = run.complete({"summary": summary})
print(json.dumps({
    "values": [hits, summary, loud, total], "wrapped": shout.__name__,
    "done": run.completed_tasks, "run_id": run.run_id, "agent": run.agent,
    "result": [result.run_id, result.agent, result.status, [t.label for t in result.tasks],
               [t.result for t in result.tasks], type(result.total_duration_ms).__name__],
}))
"""
    )
    labels = ["search", "summarize", "shout", "named"]
    assert answer == {
        "values": [{"hits": ["papayya"] * 2}, 2, "X", 3],
        "wrapped": "shout",
        "done": labels,
        "run_id": "r-1",
        "agent": "researcher",
        "result": [
            "r-1",
            "researcher",
            "completed",
            labels,
            [{"hits": ["papayya"] * 2}, 2, "X", 3],
            "int",
        ],
    }
    doc = await durable_run(api, http, "r-1")
    assert doc["status"] == "completed" and doc["output"] == {"summary": 2}
    assert [c["label"] for c in doc["checkpoints"]] == labels


async def test_a_lambda_needs_a_label(client: ScriptClient) -> None:
    answer = await client.script(
        PRELUDE
        + """
run = client.run(agent="a", run_id="r-lambda")
try:
    run.task(lambda: 1)
except ValueError as exc:
    print(json.dumps("ValueError"))
"""
    )
    assert answer == "ValueError"


async def test_resume_after_a_crash_answers_recorded_tasks_without_running_them(
    client: ScriptClient, api: Api, http: aiohttp.ClientSession
) -> None:
    # The first process dies (no complete, no clean exit) after two tasks.
    await client.script(
        PRELUDE
        + """
run = client.run(agent="researcher", run_id="r-crash")
run.task("search", lambda q: {"hits": [q]})("papayya")
run.task("count", lambda: 1)()
print(json.dumps("crashing"), flush=True)
os._exit(0)
"""
    )
    answer = await client.script(
        PRELUDE
        + """
run = client.run(agent="researcher", run_id="r-crash")
ran = []
def never(*args):
    raise AssertionError("a recorded task ran again")
def third():
    ran.append("third")
    return 3
hits = run.task("search", never)("papayya")
count = run.task("count", never)()
three = run.task("third", third)()
result = run.complete([hits, count, three])
print(json.dumps({"values": [hits, count, three], "ran": ran, "done": run.completed_tasks,
                  "status": result.status}))
"""
    )
    assert answer == {
        "values": [{"hits": ["papayya"]}, 1, 3],
        "ran": ["third"],
        "done": ["search", "count", "third"],
        "status": "completed",
    }
    doc = await durable_run(api, http, "r-crash")
    assert doc["status"] == "completed"
    assert [c["label"] for c in doc["checkpoints"]] == ["search", "count", "third"]


async def test_fail_with_an_error_without_one_and_twice(
    client: ScriptClient, api: Api, http: aiohttp.ClientSession
) -> None:
    answer = await client.script(
        PRELUDE
        + """
out = {}
run = client.run(agent="a", run_id="r-fail")
run.step("one", lambda: 1)()
out["message"] = run.fail("boom").status
out["again"] = run.fail("twice").status  # a finished run is left as it is
try:
    run.step("late", lambda: 2)()
except RuntimeError:
    out["late"] = "RuntimeError"
bare = client.run(agent="a", run_id="r-fail-bare")
bare.step("one", lambda: 1)()
result = bare.fail()
out["bare"] = [result.status, [t.label for t in result.tasks]]
print(json.dumps(out))
"""
    )
    assert answer == {
        "message": "failed",
        "again": "failed",
        "late": "RuntimeError",
        "bare": ["failed", ["one"]],
    }
    doc = await durable_run(api, http, "r-fail")
    assert doc["status"] == "failed" and "boom" in doc["error_message"]
    assert "twice" not in doc["error_message"]
    assert (await durable_run(api, http, "r-fail-bare"))["status"] == "failed"


async def test_a_second_complete_raises_runtime_error(
    client: ScriptClient, api: Api, http: aiohttp.ClientSession
) -> None:
    answer = await client.script(
        PRELUDE
        + """
run = client.run(agent="a", run_id="r-twice")
first = run.complete(1).status
caught = []
try:
    run.complete(2)
except RuntimeError:
    caught.append("complete")
try:
    run.task("late", lambda: 3)()
except RuntimeError:
    caught.append("task")
print(json.dumps({"first": first, "caught": caught}))
"""
    )
    assert answer == {"first": "completed", "caught": ["complete", "task"]}
    assert (await durable_run(api, http, "r-twice"))["output"] == 1


REPEATED = """
run = client.run(agent="a", run_id="r-loop")
calls = []
def search(q):
    calls.append(q)
    return len(calls)
step = run.task("search", search)
out = [step("a"), step("b"), run.task("search", search)("c")]
print(json.dumps({"out": out, "calls": calls, "done": run.completed_tasks}))
"""


async def test_repeated_labels(
    which: str, client: ScriptClient, api: Api, http: aiohttp.ClientSession
) -> None:
    first = await client.script(PRELUDE + REPEATED)
    again = await client.script(PRELUDE + REPEATED)
    doc = await durable_run(api, http, "r-loop")
    labels = [c["label"] for c in doc["checkpoints"]]
    if which == "published":
        # Published: a label answers from its first call, so a loop runs its body once.
        assert first == {"out": [1, 1, 1], "calls": ["a"], "done": ["search"]}
        assert again == {"out": [1, 1, 1], "calls": [], "done": ["search"]}
        assert labels == ["search"]
    else:
        # Ours: each call is a step of its own (label#2…), each answered on resume.
        done = ["search", "search#2", "search#3"]
        assert first == {"out": [1, 2, 3], "calls": ["a", "b", "c"], "done": done}
        assert again == {"out": [1, 2, 3], "calls": [], "done": done}
        assert labels == done


async def test_a_task_that_raises(
    which: str, client: ScriptClient, api: Api, http: aiohttp.ClientSession
) -> None:
    answer = await client.script(
        PRELUDE
        + """
run = client.run(agent="a", run_id="r-raise")
def boom():
    raise ValueError("nope")
try:
    run.task("boom", boom)()
except ValueError as exc:
    caught = str(exc)
after = run.task("after", lambda: 1)()
result = run.complete("done")
print(json.dumps({"caught": caught, "after": after, "done": run.completed_tasks,
                  "status": result.status}))
"""
    )
    assert answer == {"caught": "nope", "after": 1, "done": ["after"], "status": "completed"}
    doc = await durable_run(api, http, "r-raise")
    assert [c["label"] for c in doc["checkpoints"]] == ["after"]
    failed = [(s["label"], s["error_message"]) for s in doc["steps"] if s["status"] == "failed"]
    if which == "published":
        assert failed == []  # published: a task that raised leaves no trace
    else:
        assert failed == [("boom", "ValueError: nope")]  # ours: a failed step


async def test_item_ids_and_snapshots(
    client: ScriptClient, api: Api, http: aiohttp.ClientSession
) -> None:
    await client.script(
        PRELUDE
        + """
run = client.run(agent="a", run_id="r-item", item_id="order-1")
run.task("plain", lambda: 1)()
run.task("own", lambda x: x * 2, item_id="order-2", snapshot={"x": 3})(3)
run.complete()
seeded = client.run(agent="a", run_id="r-seed")
seeded.task("untagged", lambda: 0)()
seeded.task("first", lambda: "f", item_id="i-1", snapshot="in")()
seeded.task("next", lambda: "n")()
seeded.complete()
print(json.dumps(True))
"""
    )

    def context(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [
            (c["label"], c["item_id"], c["input_snapshot"], c["output_snapshot"])
            for c in doc["checkpoints"]
        ]

    item = await durable_run(api, http, "r-item")
    assert item["item_id"] == "order-1"
    assert context(item) == [("plain", "order-1", None, 1), ("own", "order-2", {"x": 3}, 6)]
    seeded = await durable_run(api, http, "r-seed")
    assert context(seeded) == [
        ("untagged", None, None, None),
        ("first", "i-1", "in", "f"),
        ("next", "i-1", None, "n"),  # the first item id given is the run's from then on
    ]


LLM = """
import httpx
run = client.run(agent="a", run_id="r-llm")
def ask(question):
    resp = httpx.post(os.environ["FAKE_URL"] + "/chat/completions",
                      headers={"Authorization": "Bearer sk-fake"},
                      json={"model": "gpt-4o-mini",
                            "messages": [{"role": "user", "content": question}]})
    resp.raise_for_status()
    return resp.json()
answer = run.step("ask", ask, kind="llm")("hello?")
result = run.complete(answer["choices"][0]["message"]["content"])
[task] = result.tasks
print(json.dumps({"kind": task.kind, "usage": [task.llm_prompt_tokens, task.llm_completion_tokens,
                  task.llm_total_tokens, task.llm_model, task.llm_stop_reason,
                  task.llm_provider_shape], "answer": result.tasks[0].result == answer}))
"""


async def test_kind_llm_reads_the_usage_of_a_provider_response(
    which: str, client: ScriptClient, fake: FakeServer, api: Api, http: aiohttp.ClientSession
) -> None:
    fake.configure(text="hi there")
    answer = await client.script(PRELUDE + LLM, FAKE_URL=fake.openai_base_url)
    [request] = fake.stats.requests
    assert request.body["messages"] == [{"role": "user", "content": "hello?"}]
    doc = await durable_run(api, http, "r-llm")
    [checkpoint] = doc["checkpoints"]
    usage = checkpoint["result"]["usage"]
    expected = [
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["total_tokens"],
        checkpoint["result"]["model"],
        "stop",
        "dict-openai",
    ]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert answer == {"kind": "llm", "usage": expected, "answer": True}
    assert doc["output"] == "hi there"
    if which == "ours":
        # Ours keeps the usage with the step; the published SDK sends it to its own reporter.
        assert checkpoint["kind"] == "llm"
        keys = ["prompt_tokens", "completion_tokens", "total_tokens", "model", "stop_reason"]
        assert [checkpoint["llm"][k] for k in keys] == expected[:5]
        assert checkpoint["llm"]["provider_shape"] == "dict-openai"
    else:
        assert checkpoint["kind"] is None and checkpoint["llm"] is None


CREDIT = """
import httpx
from papayya import CreditExhausted
run = client.run(agent="a", run_id="r-credit")
def ask():
    resp = httpx.post(os.environ["FAKE_URL"] + "/chat/completions",
                      headers={"Authorization": "Bearer sk-fake"},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "?"}]})
    resp.raise_for_status()
    return resp.json()
try:
    run.step("ask", ask, kind="llm")()
except CreditExhausted as exc:
    print(json.dumps({"raised": "CreditExhausted", "cause": type(exc.__cause__).__name__}))
"""


async def test_kind_llm_raises_credit_exhausted_when_the_provider_wants_paying(
    which: str, client: ScriptClient, fake: FakeServer, api: Api, http: aiohttp.ClientSession
) -> None:
    fake.configure(errors=Errors(fail_next=1, status=402, message="insufficient credits"))
    answer = await client.script(PRELUDE + CREDIT, FAKE_URL=fake.openai_base_url)
    assert answer == {"raised": "CreditExhausted", "cause": "HTTPStatusError"}
    doc = await durable_run(api, http, "r-credit")
    assert doc["checkpoints"] == []
    failed = [s["label"] for s in doc["steps"] if s["status"] == "failed"]
    assert failed == ([] if which == "published" else ["ask"])

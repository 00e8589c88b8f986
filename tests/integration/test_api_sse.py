"""Server-sent events over a real server: a run's steps (backfill, live, terminal, resume) and
a project's raw store events (cursor resume, filters, scoping)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from eventstore import PostgresEventStore
from papayya.domain import events as ev
from papayya.runs import Runs, run_stream
from tests.support.api import Api, default_project, other_project, running_api
from tests.support.runs import append, checkpoint_step, llm_call, llm_step, start_run
from web import keys, sse

# -- an SSE client -------------------------------------------------------------------------


@dataclass
class Message:
    event: str | None
    id: str | None
    data: Any


class SseReader:
    """A minimal SSE client over an aiohttp response: messages, and the comments it saw."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.comments: list[str] = []

    async def next(self, within: float = 10.0) -> Message | None:
        """The next message, or None when the server ended the stream."""
        fields: dict[str, str] = {}
        while True:
            raw = await asyncio.wait_for(self.resp.content.readline(), within)
            if not raw:
                return None
            line = raw.decode().rstrip("\n")
            if line == "":
                if fields:
                    return Message(
                        fields.get("event"), fields.get("id"), json.loads(fields["data"])
                    )
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(": ")
            fields[name] = value

    async def take(self, count: int, within: float = 10.0) -> list[Message]:
        taken: list[Message] = []
        for _ in range(count):
            message = await self.next(within)
            assert message is not None, f"stream ended after {len(taken)} of {count} messages"
            taken.append(message)
        return taken


def url(api: Api, run_id: str) -> str:
    return f"{api.url}/v1/runs/{run_id}/events"


# -- a run's steps ------------------------------------------------------------------------


async def test_backfill_then_live_then_terminal(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore
) -> None:
    runs = Runs(pg_store)
    project = await default_project(api, http)
    state = await start_run(runs, "r1", project)
    state = await append(runs, state, checkpoint_step(0, {"found": 3}))
    state = await append(runs, state, llm_step(1))
    async with http.get(url(api, "r1"), headers=api.headers()) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        reader = SseReader(resp)
        backfill = await reader.take(2)
        assert [(m.event, m.id) for m in backfill] == [("step", "0"), ("step", "1")]
        assert backfill[0].data["step_type"] == "checkpoint"
        assert backfill[0].data["output"] == {"found": 3}
        assert backfill[1].data["status"] == "completed"
        assert backfill[1].data["model"] == "gpt-test"
        assert backfill[1].data["cost_usd"] == "0.001234"

        # Live: a step in flight is not sent; it is when it ends.
        state = await append(runs, state, [ev.StepStarted(step_number=2, step_type="tool_call")])
        state = await append(runs, state, [llm_call(2)])
        state = await append(runs, state, [ev.StepCompleted(step_number=2)])
        [live] = await reader.take(1)
        assert (live.event, live.id, live.data["status"]) == ("step", "2", "completed")
        assert live.data["tool_calls"] == []
        # A tool that runs after its step ended: the step is sent again with it.
        tool = ev.ToolCallRecorded(step_number=2, tool="search", fingerprint="t1", output=[1])
        state = await append(runs, state, [tool])
        [again] = await reader.take(1)
        assert again.id == "2" and again.data["tool_calls"][0]["tool"] == "search"

        state = await append(runs, state, [ev.RunCompleted(output="done")])
        [terminal] = await reader.take(1)
        assert terminal.event == "terminal" and terminal.id is None
        assert terminal.data["status"] == "completed"
        assert await reader.next() is None  # the server closed the stream


async def test_resume_with_last_event_id(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore
) -> None:
    runs = Runs(pg_store)
    project = await default_project(api, http)
    state = await start_run(runs, "r2", project)
    for n in range(4):
        state = await append(runs, state, checkpoint_step(n))
    state = await append(runs, state, [ev.RunFailed(code="boom", message="it broke")])
    headers = {**api.headers(), "Last-Event-ID": "1"}
    async with http.get(url(api, "r2"), headers=headers) as resp:
        reader = SseReader(resp)
        messages = await reader.take(3)
        assert [(m.event, m.id) for m in messages] == [
            ("step", "2"),
            ("step", "3"),
            ("terminal", None),
        ]
        assert messages[-1].data == {
            "status": "failed",
            "error_code": "boom",
            "error_message": "it broke",
        }
        assert await reader.next() is None
    for bad in ["x", "-5", "1.5"]:
        headers = {**api.headers(), "Last-Event-ID": bad}
        async with http.get(url(api, "r2"), headers=headers) as resp:
            assert resp.status == 400, bad
            assert (await resp.json())["error"]["code"] == "invalid_input"


async def test_auth_and_project_scoping(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore
) -> None:
    runs = Runs(pg_store)
    theirs, their_key = await other_project(api, http, "team-b")
    state = await start_run(runs, "theirs", theirs)
    await append(runs, state, [ev.RunCompleted()])
    async with http.get(url(api, "theirs")) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"
    for run_id in ["theirs", "missing"]:
        async with http.get(url(api, run_id), headers=api.headers()) as resp:
            assert resp.status == 404
            assert resp.headers["Content-Type"].startswith("application/json")
            assert (await resp.json())["error"]["code"] == "run_not_found"
    async with http.get(url(api, "theirs"), headers=api.headers(their_key)) as resp:
        assert resp.status == 200
        [terminal] = await SseReader(resp).take(1)
        assert terminal.data["status"] == "completed"


async def test_heartbeats_and_disconnect_cleanup(
    api: Api,
    http: aiohttp.ClientSession,
    pg_store: PostgresEventStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(sse, "WATCH_SECONDS", 0.05)
    runs = Runs(pg_store)
    await start_run(runs, "idle", await default_project(api, http))
    hub = api.app[keys.STORE].hub
    before = len(hub._subscribers)
    resp = await http.get(url(api, "idle"), headers=api.headers())
    # A run with no steps yet: nothing to send but heartbeats.
    assert await asyncio.wait_for(resp.content.readline(), 5) == b": ping\n"
    assert await asyncio.wait_for(resp.content.readline(), 5) == b"\n"
    assert len(hub._subscribers) == before + 1
    resp.close()  # the client goes away without a word
    deadline = asyncio.get_running_loop().time() + 5
    while len(hub._subscribers) != before:
        assert asyncio.get_running_loop().time() < deadline, "subscription not cleaned up"
        await asyncio.sleep(0.05)


async def test_watchers_of_one_run_share_one_subscription(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore
) -> None:
    runs = Runs(pg_store)
    state = await start_run(runs, "popular", await default_project(api, http))
    state = await append(runs, state, checkpoint_step(0))
    hub = api.app[keys.STORE].hub

    def watching() -> int:  # subscriptions to this run's stream (others come and go)
        stream = {run_stream(state.run_id)}
        return sum(1 for sub in list(hub._subscribers) if sub.filters.streams == stream)

    responses = [await http.get(url(api, "popular"), headers=api.headers()) for _ in range(3)]
    readers = [SseReader(r) for r in responses]
    for reader in readers:
        assert [m.id for m in await reader.take(1)] == ["0"]
    assert watching() == 1
    # A late joiner that resumes gets only what it has not seen.
    late = await http.get(url(api, "popular"), headers={**api.headers(), "Last-Event-ID": "0"})
    readers.append(SseReader(late))
    responses.append(late)
    await append(runs, state, checkpoint_step(1))
    for reader in readers:
        assert [m.id for m in await reader.take(1)] == ["1"]
    for resp in responses:
        resp.close()
    deadline = asyncio.get_running_loop().time() + 5
    while watching():
        assert asyncio.get_running_loop().time() < deadline, "the feed was not closed"
        await asyncio.sleep(0.05)


async def test_shutdown_ends_open_streams(
    dsn: str,
    http: aiohttp.ClientSession,
    pg_store: PostgresEventStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = Runs(pg_store)
    loop = asyncio.get_running_loop()
    async with running_api(dsn, monkeypatch) as server:
        await start_run(runs, "forever", await default_project(server, http))
        resp = await http.get(url(server, "forever"), headers=server.headers())
        events = await http.get(events_url(server), headers=server.headers())
        assert resp.status == events.status == 200
        started = loop.time()
    # Not the 60 s aiohttp would wait for handlers that never return by themselves.
    assert loop.time() - started < 10
    assert await SseReader(resp).next() is None
    resp.close()
    events.close()


async def test_a_listener_that_falls_behind_is_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "MAX_PENDING", 3)
    listener = sse.Listener()
    for n in range(5):
        listener.push(b"m%d" % n)
    # Ended with what it had: its client reconnects with Last-Event-ID and resumes.
    assert listener.ended and listener.pending == [b"m0", b"m1", b"m2"]


# -- a project's store events -------------------------------------------------------------


def events_url(api: Api, query: str = "") -> str:
    return f"{api.url}/v1/events{query}"


async def test_store_events_scoped_resumable_and_filtered(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore
) -> None:
    runs = Runs(pg_store)
    mine = await default_project(api, http)
    theirs, their_key = await other_project(api, http, "team-b")
    # Another project's streams first, ours last: once our last event has arrived, every
    # event of theirs has been passed over.
    state = await start_run(runs, "their-run", theirs)
    await append(runs, state, checkpoint_step(0))
    await pg_store.append(
        "agent-their-agent",
        [ev.to_new_event(ev.AgentDefined(agent_id="b", project_id=theirs, name="B", slug="b"))],
    )
    await pg_store.append(
        "agent-my-agent",
        [ev.to_new_event(ev.AgentDefined(agent_id="a", project_id=mine, name="A", slug="a"))],
    )
    state = await start_run(runs, "my-run", mine)
    await append(runs, state, checkpoint_step(0))  # 1 + 2 + 3 = 6 events of ours

    async with http.get(events_url(api), headers=api.headers()) as resp:
        assert resp.status == 200
        got = await SseReader(resp).take(6)
    assert {m.data["stream_id"] for m in got} == {"agent-my-agent", "run-my-run"}
    assert [m.event for m in got] == [m.data["event_type"] for m in got]
    assert [m.id for m in got] == [m.data["cursor"] for m in got]
    first = got[0].data
    assert first["event_type"] == "AgentDefined" and first["data"]["project_id"] == mine
    assert set(first) == {
        "stream_id",
        "stream_version",
        "event_id",
        "event_type",
        "data",
        "recorded_at",
        "cursor",
    }

    # Resume after the third event, by header and by query parameter.
    resume_at = got[2].id
    assert resume_at is not None
    for headers, query in [
        ({**api.headers(), "Last-Event-ID": resume_at}, ""),
        (api.headers(), f"?cursor={resume_at}"),
    ]:
        async with http.get(events_url(api, query), headers=headers) as resp:
            rest = await SseReader(resp).take(3)
        assert [m.id for m in rest] == [m.id for m in got[3:]]

    # Filters: by type, by category, by stream.
    async with http.get(events_url(api, "?type=StepCompleted"), headers=api.headers()) as r:
        [completed] = await SseReader(r).take(1)
        assert completed.data["stream_id"] == "run-my-run"
    async with http.get(events_url(api, "?category=agent"), headers=api.headers()) as r:
        [agent] = await SseReader(r).take(1)
        assert agent.data["stream_id"] == "agent-my-agent"
        # Nothing else of ours is an agent event: the next thing is a heartbeat or nothing.
        with pytest.raises(TimeoutError):
            await SseReader(r).next(within=0.5)
    query = "?stream=run-my-run&type=RunQueued,StepStarted"
    async with http.get(events_url(api, query), headers=api.headers()) as r:
        picked = await SseReader(r).take(2)
        assert [m.event for m in picked] == ["RunQueued", "StepStarted"]

    # The other project sees its own events only.
    async with http.get(events_url(api), headers=api.headers(their_key)) as resp:
        theirs_got = await SseReader(resp).take(6)
    assert {m.data["stream_id"] for m in theirs_got} == {"run-their-run", "agent-their-agent"}


async def test_store_events_live_from_now(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore
) -> None:
    runs = Runs(pg_store)
    mine = await default_project(api, http)
    state = await start_run(runs, "old", mine)
    async with http.get(events_url(api, "?cursor=now"), headers=api.headers()) as resp:
        reader = SseReader(resp)
        await asyncio.sleep(0.2)  # the stream is open before the append
        await append(runs, state, [ev.RunCompleted(output=1)])
        # "now" is the read fence, which a transaction still open elsewhere on the server
        # (cluster-wide) may hold a little behind the last commit: older events may come too.
        message = await reader.next()
        while message is not None and message.event != "RunCompleted":
            message = await reader.next()
        # A stream it meets mid-way: its owner is loaded from the stream's first event.
        assert message is not None and message.data["stream_id"] == "run-old"


async def test_store_events_bad_input(api: Api, http: aiohttp.ClientSession) -> None:
    async with http.get(events_url(api)) as resp:
        assert resp.status == 401
    for headers, query in [
        (api.headers(), "?cursor=nonsense"),
        (api.headers(), "?cursor=cZZ_1"),
        ({**api.headers(), "Last-Event-ID": "c1"}, ""),
    ]:
        async with http.get(events_url(api, query), headers=headers) as resp:
            assert resp.status == 400, query
            assert (await resp.json())["error"]["code"] == "invalid_cursor"


async def test_openapi_lists_the_streams(api: Api, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{api.url}/openapi.json") as resp:
        spec = await resp.json()
    run_events = spec["paths"]["/v1/runs/{id}/events"]["get"]
    assert "text/event-stream" in run_events["responses"]["200"]["content"]
    params = {p["name"] for p in spec["paths"]["/v1/events"]["get"]["parameters"]}
    assert params == {"cursor", "category", "type", "stream"}

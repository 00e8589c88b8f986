"""The SDK in HTTP mode against a live server: the behaviours of ``test_sdk.py`` (direct mode)
through the durable checkpoints API, then retries against real flaky servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

from papayya import papayya
from papayya.errors import (
    Conflict,
    InvalidInput,
    PapayyaError,
    PayloadTooLarge,
    RunNotFound,
    StoreUnavailable,
    Unauthorized,
)
from papayya.sdk import Papayya
from tests.support.api import Api
from web import keys

if TYPE_CHECKING:
    from pytest_aiohttp import AiohttpServer

T = TypeVar("T")


@contextlib.contextmanager
def connected(url: str, key: str) -> Iterator[Papayya]:
    client = papayya(base_url=url, api_key=key)
    try:
        yield client
    finally:
        client.close()


async def against(api: Api, scenario: Callable[[Papayya], T], url: str | None = None) -> T:
    """Run a synchronous SDK scenario in a thread, so this loop keeps serving the API."""

    def go() -> T:
        with connected(url or api.url, api.key) as client:
            assert client.mode == "http"
            return scenario(client)

    return await asyncio.to_thread(go)


async def test_tasks_are_checkpointed_and_answered_on_resume(api: Api) -> None:
    calls: list[str] = []

    def search() -> dict[str, int]:
        calls.append("search")
        return {"hits": len(calls)}

    def scenario(client: Papayya) -> None:
        run = client.run("my-agent", run_id="r1", metadata={"user": "u1"})
        assert run.status == "running" and run.id == "r1"
        assert run.task("search", search)() == {"hits": 1}
        assert run.task("search", search)() == {"hits": 2}
        assert run.task(search)() == {"hits": 3}
        steps = run.state.steps
        assert [s.label for s in steps] == ["search", "search#2", "search#3"]
        assert all(s.step_type == "checkpoint" and s.status == "completed" for s in steps)

        again = client.run("my-agent", run_id="r1")
        assert again.state.attempt == 2 and again.state.metadata == {"user": "u1"}
        assert [s.output for s in again.state.steps] == [{"hits": 1}, {"hits": 2}, {"hits": 3}]
        assert again.task("search", search)() == {"hits": 1}
        assert again.task("search", search)() == {"hits": 2}
        assert again.task(search)() == {"hits": 3}
        assert calls == ["search"] * 3
        assert again.task("summarise", lambda: "new")() == "new"
        again.complete({"answer": 42})
        assert again.status == "completed"
        done = client.run("my-agent", run_id="r1")
        assert done.status == "completed" and done.state.output == {"answer": 42}
        assert done.state.attempt == 2  # opening a finished run starts no attempt
        done.complete({"answer": 42})
        with pytest.raises(Conflict):
            done.task("more", lambda: 1)()

    await against(api, scenario)


async def test_decorator_and_coroutine_tasks(api: Api) -> None:
    def scenario(client: Papayya) -> None:
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

        assert resumed.task("double", lambda: -1)() == 10

        async def never() -> list[int]:
            raise AssertionError("a recorded coroutine task is answered, not run")

        assert asyncio.run(resumed.task("fetch", never)()) == [1, 2]

    await against(api, scenario)


async def test_divergence_goes_live_from_the_first_mismatch(api: Api) -> None:
    def scenario(client: Papayya) -> None:
        run = client.run("agent-a", run_id="r3")
        run.task("a", lambda: 1)()
        run.task("b", lambda: 2)()
        resumed = client.run("agent-a", run_id="r3")
        assert resumed.task("a", lambda: 100)() == 1
        assert resumed.task("c", lambda: 3)() == 3
        assert resumed.diverged_at_step == 1
        assert resumed.task("b", lambda: 200)() == 200
        # As in direct mode, the live "b" of attempt 2 is a step of its own.
        reopened = client.run("agent-a", run_id="r3")
        assert [(s.label, s.output) for s in reopened.state.steps] == [
            ("a", 1),
            ("b", 2),
            ("c", 3),
            ("b", 200),
        ]

    await against(api, scenario)


async def test_unserialisable_result_is_refused_before_writing(api: Api, http: Any) -> None:
    def scenario(client: Papayya) -> None:
        run = client.run("agent-a", run_id="r4")
        with pytest.raises(InvalidInput, match="not JSON-serialisable"):
            run.task("bad", lambda: object())()
        assert run.state.steps == ()
        assert client.run("agent-a", run_id="r4").state.steps == ()

    await against(api, scenario)
    async with http.get(f"{api.url}/v1/durable/runs/r4", headers=api.headers()) as resp:
        assert (await resp.json())["steps"] == []


async def test_failing_task_is_recorded_and_runs_again_on_resume(api: Api) -> None:
    def scenario(client: Papayya) -> None:
        run = client.run("agent-a", run_id="r5")
        with pytest.raises(ZeroDivisionError):
            run.task("boom", lambda: 1 / 0)()
        step = run.state.steps[0]
        assert step.status == "failed" and "ZeroDivisionError" in (step.error_message or "")
        resumed = client.run("agent-a", run_id="r5")
        assert resumed.state.steps[0].status == "failed"
        assert resumed.task("boom", lambda: "fixed")() == "fixed"
        assert [s.status for s in resumed.state.steps] == ["failed", "completed"]

    await against(api, scenario)


async def test_large_results_go_to_payloads(api: Api) -> None:
    big = {"text": "x" * 50_000}

    def scenario(client: Papayya) -> None:
        run = client.run("agent-a", run_id="r6")
        assert run.task("big", lambda: big)() == big
        assert (run.state.steps[0].output_ref or "").startswith("sha256:")
        assert client.run("agent-a", run_id="r6").task("big", lambda: None)() == big
        run.complete(big)
        done = client.run("agent-a", run_id="r6")
        assert done.state.output is None and (done.state.output_ref or "").startswith("sha256:")

    await against(api, scenario)


async def test_replay_answers_steps_before_n_from_the_source(api: Api) -> None:
    def scenario(client: Papayya) -> None:
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
        assert client.run("agent-a", run_id="src").state.steps[2].output == 2

    await against(api, scenario)


async def test_a_queued_replay_run_answers_from_its_source(api: Api, http: Any) -> None:
    from papayya.domain import events as ev

    def record_source(client: Papayya) -> None:
        source = client.run("agent-a", run_id="src2")
        for i in range(3):
            source.task(f"t{i}", lambda i=i: i)()
        source.complete()

    await against(api, record_source)
    async with http.get(f"{api.url}/v1/projects", headers=api.headers()) as resp:
        project = (await resp.json())[0]["id"]
    queued = ev.RunQueued(
        run_id="rep2",
        project_id=project,
        agent_id="agent-a",
        replayed_from="src2",
        replay_from_step=2,
    )
    await api.app[keys.RUNS].queue(queued)

    def run_replay(client: Papayya) -> list[int]:
        replay = client.run("agent-a", run_id="rep2")
        return [replay.task(f"t{i}", lambda i=i: i * 100)() for i in range(3)]

    assert await against(api, run_replay) == [0, 1, 200]


async def test_fail_and_context_manager(api: Api) -> None:
    def scenario(client: Papayya) -> None:
        with pytest.raises(ValueError), client.run("agent-a", run_id="r7") as run:
            raise ValueError("bad thing")
        assert run.status == "failed" and "bad thing" in (run.state.error_message or "")
        again = client.run("agent-a", run_id="r7")
        assert again.status == "failed" and again.state.error_code == "agent_error"

    await against(api, scenario)


async def test_bad_input(api: Api) -> None:
    def scenario(client: Papayya) -> None:
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
        with pytest.raises(InvalidInput, match="belongs to agent"):
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
        assert client.run("agent-a", run_id="r8").state.steps == ()

    await against(api, scenario)


# -- HTTP mode itself --------------------------------------------------------------------------


async def test_mode_comes_from_the_environment(
    api: Api, monkeypatch: pytest.MonkeyPatch, dsn: str
) -> None:
    monkeypatch.setenv("PAPAYYA_BASE_URL", api.url)
    monkeypatch.setenv("PAPAYYA_API_KEY", api.key)

    def from_env() -> tuple[str, str]:
        with papayya() as client:
            run = client.run("agent-a", run_id="env")
            return client.mode, run.status

    assert await asyncio.to_thread(from_env) == ("http", "running")

    def explicit_database() -> str:
        with papayya(dsn) as client:  # an explicit database_url still means direct mode
            return client.mode

    assert await asyncio.to_thread(explicit_database) == "direct"
    monkeypatch.delenv("PAPAYYA_API_KEY")
    with pytest.raises(InvalidInput, match="API key"):
        papayya()
    with pytest.raises(InvalidInput, match="not both"):
        papayya(dsn, base_url=api.url, api_key=api.key)
    with pytest.raises(InvalidInput, match="http"):
        papayya(base_url="ftp://x", api_key=api.key)


async def test_a_bad_key_is_unauthorized_and_another_projects_ids_are_its_own(
    api: Api, http: Any
) -> None:
    def bad_key() -> None:
        with connected(api.url, "cpk_not_a_real_key_0000000000") as client:
            client.run("agent-a", run_id="k1")

    with pytest.raises(Unauthorized):
        await asyncio.to_thread(bad_key)

    await against(api, lambda client: client.run("agent-a", run_id="mine").task("a", lambda: 1)())
    async with http.post(
        f"{api.url}/v1/projects", json={"name": "other"}, headers=api.headers()
    ) as resp:
        other_key = (await resp.json())["api_key"]["key"]

    def other_project() -> Any:
        with connected(api.url, other_key) as client:
            run = client.run("agent-a", run_id="mine")
            return run.task("a", lambda: 2)()  # not answered from the first project's run

    assert await asyncio.to_thread(other_project) == 2


# -- retries against real flaky servers on loopback --------------------------------------------


class Flaky:
    """An HTTP proxy to the API that first answers ``failures`` requests with ``status``."""

    def __init__(
        self, target: str, failures: int, status: int = 503, headers: dict[str, str] | None = None
    ) -> None:
        self.target = target
        self.failures = failures
        self.status = status
        self.headers = headers or {}
        self.seen: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(f"{request.method} {request.path}")
        if self.failures > 0:
            self.failures -= 1
            body = {"error": {"code": "flaky", "message": f"flaky says {self.status}"}}
            return web.json_response(body, status=self.status, headers=self.headers)
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.target + request.path_qs,
                data=await request.read(),
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            ) as answer,
        ):
            return web.Response(
                body=await answer.read(),
                status=answer.status,
                content_type=answer.content_type,
            )


async def serve(aiohttp_server: AiohttpServer, proxy: Flaky) -> Flaky:
    """``proxy`` on pytest-aiohttp's test server, which closes it after the test."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    server = await aiohttp_server(app)
    proxy.url = f"http://{server.host}:{server.port}"
    return proxy


async def test_5xx_and_429_are_retried(api: Api, aiohttp_server: AiohttpServer) -> None:
    def scenario(client: Papayya) -> Any:
        run = client.run("agent-a", run_id="f1")
        return run.task("a", lambda: 1)(), run.state.attempt

    proxy = await serve(aiohttp_server, Flaky(api.url, failures=2))
    assert await against(api, scenario, proxy.url) == (1, 1)
    assert proxy.seen.count("POST /v1/durable/runs") == 3
    retry_after = {"Retry-After": "0.2"}
    proxy = await serve(aiohttp_server, Flaky(api.url, 1, status=429, headers=retry_after))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await against(api, scenario, proxy.url) == (1, 2)
    assert loop.time() - started >= 0.2  # Retry-After was honoured
    assert proxy.seen.count("POST /v1/durable/runs") == 2


async def test_retries_are_bounded(api: Api, aiohttp_server: AiohttpServer) -> None:
    proxy = await serve(aiohttp_server, Flaky(api.url, failures=100, status=502))
    with pytest.raises(PapayyaError, match="flaky says 502"):
        await against(api, lambda client: client.run("agent-a", run_id="f2"), proxy.url)
    assert len(proxy.seen) == 5


async def test_4xx_is_never_retried(api: Api, aiohttp_server: AiohttpServer) -> None:
    proxy = await serve(aiohttp_server, Flaky(api.url, failures=100, status=409))
    with pytest.raises(Conflict, match="flaky says 409"):
        await against(api, lambda client: client.run("agent-a", run_id="f3"), proxy.url)
    assert len(proxy.seen) == 1


async def test_a_retried_checkpoint_after_a_lost_answer_is_not_recorded_twice(
    api: Api, aiohttp_server: AiohttpServer
) -> None:
    """The proxy forwards the checkpoint but loses the answer: the retry gets the step
    that was recorded, and the run has it once."""

    class LosesAnswers(Flaky):
        lose_next = True

        async def handle(self, request: web.Request) -> web.StreamResponse:
            answer = await super().handle(request)  # forwarded: the server has recorded it
            if request.method == "POST" and request.path.endswith("/checkpoints"):
                self.lose_next = not self.lose_next  # lose every other checkpoint answer
                if not self.lose_next:
                    lost = {"error": {"code": "gateway_timeout", "message": "lost"}}
                    return web.json_response(lost, status=504)
            return answer

    proxy = await serve(aiohttp_server, LosesAnswers(api.url, failures=0))

    def scenario(client: Papayya) -> list[str | None]:
        run = client.run("agent-a", run_id="f4")
        for i in range(3):
            run.task(f"t{i}", lambda i=i: i)()
        return [s.label for s in client.run("agent-a", run_id="f4").state.steps]

    assert await against(api, scenario, proxy.url) == ["t0", "t1", "t2"]


async def test_dropped_connections_are_retried(api: Api) -> None:
    """A TCP proxy that closes the first connections without answering, then pipes."""
    target_port = int(api.url.rsplit(":", 1)[1])
    drops = [2]

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if drops[0] > 0:
            drops[0] -= 1
            await reader.read(1)
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        got = await against(
            api,
            lambda client: client.run("agent-a", run_id="f5").task("a", lambda: "ok")(),
            f"http://127.0.0.1:{port}",
        )
        assert got == "ok" and drops == [0]
    finally:
        server.close()
        await server.wait_closed()


async def test_an_unreachable_server_fails_after_bounded_retries(api: Api) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens on that port now
    with pytest.raises(StoreUnavailable, match="cannot reach"):
        await against(api, lambda client: client.run("agent-a"), f"http://127.0.0.1:{port}")


async def test_a_result_over_the_request_limit_is_refused_and_nothing_is_written(
    api: Api,
) -> None:
    def scenario(client: Papayya) -> None:
        run = client.run("agent-a", run_id="huge")
        with pytest.raises(PayloadTooLarge):
            run.task("huge", lambda: "x" * (2 * 1024 * 1024))()
        assert client.run("agent-a", run_id="huge").state.steps == ()

    await against(api, scenario)


async def test_the_sdk_state_is_the_servers_fold(api: Api) -> None:
    def scenario(client: Papayya) -> Any:
        run = client.run("agent-a", run_id="same")
        run.task("a", lambda: {"n": 1})()
        with pytest.raises(KeyError):
            run.task("b", lambda: {}["missing"])()
        run.task("c", lambda: "z" * 10_000)()
        resumed = client.run("agent-a", run_id="same")
        resumed.task("a", lambda: None)()
        resumed.task("d", lambda: [1])()
        return run.state, resumed.state

    first, resumed = await against(api, scenario)
    server = await api.app[keys.RUNS].load(f"{first.project_id}:same")

    def shape(state: Any) -> list[tuple[Any, ...]]:
        return [
            (s.step_number, s.label, s.status, s.attempt, s.fingerprint, s.output, s.output_ref,
             s.error_code, s.error_message)
            for s in state.steps
        ]  # fmt: skip

    assert shape(resumed) == shape(server)
    assert shape(first) == shape(server)[:3]
    assert (resumed.status, resumed.attempt, resumed.agent_id) == (
        server.status,
        server.attempt,
        server.agent_id,
    )


async def test_an_async_llm_task_keeps_its_usage_and_item_with_the_step(
    api: Api, http: Any
) -> None:
    import openai

    from fakellm.config import FakeConfig
    from fakellm.testing import running_fake

    async with running_fake(FakeConfig(text="hi there")) as fake:

        def scenario(client: Papayya) -> tuple[Any, Any]:
            oa = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="sk-fake")
            run = client.run("agent-a", run_id="llm-async")

            @run.step("ask", kind="llm", item_id="ticket-1", snapshot={"q": "hello?"})
            async def ask(question: str) -> Any:
                messages = [{"role": "user", "content": question}]
                return await oa.chat.completions.create(model="gpt-4o-mini", messages=messages)

            async def go() -> Any:
                try:
                    return await ask("hello?")
                finally:
                    await oa.close()

            answer = asyncio.run(go())
            return answer, run.complete(answer.choices[0].message.content)

        answer, result = await against(api, scenario)
    [entry] = result.tasks
    assert (entry.kind, entry.item_id, entry.llm_provider_shape) == ("llm", "ticket-1", "openai")
    assert entry.llm_total_tokens == answer.usage.total_tokens > 0
    path = f"{api.url}/v1/durable/runs/llm-async"
    async with http.get(path, headers=api.headers()) as resp:
        doc = await resp.json()
    [checkpoint] = doc["checkpoints"]
    assert checkpoint["kind"] == "llm" and checkpoint["item_id"] == "ticket-1"
    assert checkpoint["input_snapshot"] == {"q": "hello?"}
    assert checkpoint["llm"] == {
        "prompt_tokens": answer.usage.prompt_tokens,
        "completion_tokens": answer.usage.completion_tokens,
        "total_tokens": answer.usage.total_tokens,
        "model": "gpt-4o-mini",
        "stop_reason": "stop",
        "provider_shape": "openai",
    }
    assert checkpoint["result"] == checkpoint["output_snapshot"] == answer.model_dump(mode="json")

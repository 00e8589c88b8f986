"""Steering runs in the cloud path: cancellation, callbacks, lease expiry and recovery,
graceful drain, burst mode, the runtime API over a Unix socket, and bad input."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import standardwebhooks
from aiohttp import web

from papayya.domain import events as ev
from tests.support.agents import AGENT, SLOW
from tests.support.cloud import Cloud, running_cloud

pytestmark = pytest.mark.timeout(120)


STUBBORN = """
import os, signal, time
from papayya import agent

@agent
def stubborn():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # ignores the polite stop
    with open(os.environ["SIDE_EFFECTS"], "a") as f:
        f.write("started\\n")
    time.sleep(60)
"""


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path) as running:
        yield running


async def wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_cancelling_a_running_run_kills_an_agent_that_ignores_sigterm(cloud: Cloud) -> None:
    await cloud.register("stubborn", STUBBORN)
    run_id = await cloud.start("stubborn")

    async def started() -> bool:
        return cloud.side_effects() == ["started"]

    await wait_for(started)
    began = time.monotonic()
    status, body = await cloud.call("POST", f"/v1/runs/{run_id}/cancel", {"reason": "enough"})
    assert status == 200, body
    run = await cloud.wait(run_id, timeout=20)
    took = time.monotonic() - began
    assert run.status == "cancelled" and run.error_message == "enough"
    assert took < 2 + 3  # the grace period (2 s here), then SIGKILL
    assert cloud.services.worker is not None and cloud.services.worker.active == 0


async def test_a_cancelled_queued_run_never_starts(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with running_cloud(dsn, monkeypatch, tmp_path, worker=False) as cloud:
        await cloud.register("slow", SLOW)
        run_id = await cloud.start("slow", input={"sleep": 0})
        status, _ = await cloud.call("POST", f"/v1/runs/{run_id}/cancel", {})
        assert status == 200
        other = await cloud.start("slow", input={"sleep": 0})
        # The dispatcher queues runs after their events commit: a burst worker started before
        # `other` reaches Redis would find the queue empty and stop.
        mark = cloud.queue._mark(other)
        async with asyncio.timeout(30):
            while not await cloud.queue.redis.exists(mark):
                await asyncio.sleep(0.02)
        worker = cloud.in_process_worker(burst=True, block_ms=200)
        await asyncio.wait_for(worker.run(), 30)
        assert (await cloud.runs.load(other)).status == "completed"
        run = await cloud.runs.load(run_id)
        assert run.status == "cancelled" and run.attempt == 0 and run.started_at is None
        assert cloud.side_effects() == ["done"]


async def test_callbacks_are_signed_and_retried_until_the_receiver_accepts(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=500 if len(received) <= 2 else 204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    assert cloud.services.deliverer is not None
    cloud.services.deliverer.backoff_seconds = 0.1
    try:
        await cloud.register("slow", SLOW)
        run_id = await cloud.start(
            "slow", input={"sleep": 0}, callback_url=f"http://127.0.0.1:{port}/hook"
        )
        await cloud.wait(run_id)

        async def delivered() -> bool:
            return (await cloud.runs.load(run_id)).callback_status == "delivered"

        await wait_for(delivered)
    finally:
        await runner.cleanup()
    attempts = [e for e in await cloud.runs.events(run_id) if isinstance(e, ev.CallbackAttempted)]
    assert [(a.attempt, a.delivered, a.status_code) for a in attempts] == [
        (1, False, 500),
        (2, False, 500),
        (3, True, 204),
    ]
    assert len(received) == 3
    status, body = await cloud.call("GET", "/v1/callbacks/secret")
    assert status == 200 and body["secret"].startswith("whsec_")
    verifier = standardwebhooks.Webhook(body["secret"])
    for headers, payload in received:
        sent = verifier.verify(payload, headers)  # raises unless the signature holds
        assert sent["id"] == run_id and sent["status"] == "completed"
    assert len({h["webhook-id"] for h, _ in received}) == 1  # retries keep the message id


async def test_a_callback_that_keeps_failing_gives_up_after_three_retries(cloud: Cloud) -> None:
    assert cloud.services.deliverer is not None
    cloud.services.deliverer.backoff_seconds = 0.05
    await cloud.register("slow", SLOW)
    run_id = await cloud.start("slow", input={"sleep": 0}, callback_url="http://127.0.0.1:9/x")
    await cloud.wait(run_id)

    async def gave_up() -> bool:
        return (await cloud.runs.load(run_id)).callback_status == "failed"

    await wait_for(gave_up)
    attempts = [e for e in await cloud.runs.events(run_id) if isinstance(e, ev.CallbackAttempted)]
    assert [a.attempt for a in attempts] == [1, 2, 3, 4] and attempts[-1].final
    assert all(a.error for a in attempts)


async def test_a_killed_worker_lease_expires_and_the_run_resumes_elsewhere(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with running_cloud(
        dsn, monkeypatch, tmp_path, worker=False, lease_seconds=2.0, heartbeat_seconds=0.5
    ) as cloud:  # fmt: skip
        await cloud.register("slow", SLOW)
        run_id = await cloud.start("slow", input={"steps": 6, "sleep": 0.3})
        worker = await cloud.spawn_worker()

        async def checkpointed() -> bool:
            return len((await cloud.runs.load(run_id)).steps) >= 2

        await wait_for(checkpointed)
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        killed = time.monotonic()
        await cloud.spawn_worker()

        async def recovered() -> bool:
            return (await cloud.runs.load(run_id)).attempt == 2

        await wait_for(recovered)
        assert time.monotonic() - killed <= 2.0 + 5
        run = await cloud.wait(run_id)
        events = await cloud.runs.events(run_id)
    assert run.status == "completed" and run.recoveries == 1
    lost = [e for e in events if isinstance(e, ev.AttemptLost)]
    assert [(e.attempt, e.reason) for e in lost] == [(1, "lease_expired")]
    done = [s for s in run.steps if s.status == "completed"]
    assert [s.label for s in done] == [f"step{i}" for i in range(6)]
    # Checkpoints finished before the kill were answered from the recording, not rerun.
    saved = [e.label for e in events if isinstance(e, ev.CheckpointSaved)]
    assert len(saved) == len(set(saved)) == 6


async def test_after_max_attempts_a_lost_run_fails_with_worker_lost(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with running_cloud(
        dsn, monkeypatch, tmp_path, worker=False, lease_seconds=1.0, heartbeat_seconds=0.25,
        max_attempts=1,
    ) as cloud:  # fmt: skip
        await cloud.register("stubborn", STUBBORN)
        run_id = await cloud.start("stubborn")
        worker = await cloud.spawn_worker()

        async def started() -> bool:
            return cloud.side_effects() == ["started"]

        await wait_for(started)
        worker.send_signal(signal.SIGKILL)
        run = await cloud.wait(run_id, timeout=15)
    assert run.status == "failed" and run.error_code == "worker_lost"


async def test_sigterm_drains_a_worker_running_runs_finish_first(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with running_cloud(dsn, monkeypatch, tmp_path, worker=False) as cloud:
        await cloud.register("slow", SLOW)
        run_id = await cloud.start("slow", input={"steps": 3, "sleep": 0.4})
        worker = await cloud.spawn_worker()

        async def running() -> bool:
            return len((await cloud.runs.load(run_id)).steps) >= 1

        await wait_for(running)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 30) == 0
        run = await cloud.runs.load(run_id)
    assert run.status == "completed" and run.attempt == 1


async def test_a_burst_worker_runs_what_is_queued_then_exits(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with running_cloud(dsn, monkeypatch, tmp_path, worker=False) as cloud:
        await cloud.register("slow", SLOW)
        run_ids = [await cloud.start("slow", input={"sleep": 0}) for _ in range(3)]

        async def enqueued() -> bool:
            return await cloud.queue.depth() == 3

        await wait_for(enqueued)
        worker = await cloud.spawn_worker("--burst")
        assert await asyncio.wait_for(worker.wait(), 60) == 0
        states = [await cloud.runs.load(r) for r in run_ids]
    assert [s.status for s in states] == ["completed"] * 3


async def test_agents_reach_the_control_plane_over_its_unix_socket(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with running_cloud(dsn, monkeypatch, tmp_path, unix_socket=True) as cloud:
        assert cloud.services.worker is not None
        assert cloud.services.worker.config.control_socket is not None
        await cloud.register("weather", AGENT)
        run = await cloud.wait(await cloud.start("weather", input={"question": "Oslo?"}))
    assert run.status == "completed", run.error_message
    assert run.usage.output_tokens > 0 and [s.step_type for s in run.steps][-1] == "response"


async def test_deployment_endpoints_refuse_bad_input_and_other_projects(cloud: Cloud) -> None:
    await cloud.register("weather", AGENT)
    for body in (
        {"entrypoint": "relative/agent.py"},
        {"entrypoint": "/abs/agent.py", "runtime": "docker"},
        {"entrypoint": "/abs/agent.py", "surprise": 1},
        {"entrypoint": "/abs/agent.py", "agent_function": "not an identifier"},
        {"entrypoint": "not a module!"},
        {},
    ):
        status, answer = await cloud.call("POST", "/v1/agents/weather/deployments", body)
        assert status == 400 and "error" in answer, (body, answer)
    status, listed = await cloud.call("GET", "/v1/agents/weather/deployments")
    assert status == 200 and [d["version"] for d in listed] == [1]
    deployment = listed[0]["id"]
    status, one = await cloud.call("GET", f"/v1/deployments/{deployment}")
    assert status == 200 and one["runtime"] == "process" and one["status"] == "ready"
    async with aiohttp.ClientSession() as http:
        for method, path in (
            ("GET", f"/v1/deployments/{deployment}"),
            ("GET", "/v1/agents/weather/deployments"),
            ("POST", "/v1/agents/weather/deployments"),
            ("GET", "/v1/callbacks/secret"),
            ("POST", "/v1/callbacks/secret/rotate"),
        ):
            async with http.request(method, cloud.url + path, json={}) as r:
                assert r.status == 401 and "error" in await r.json()
        status, project = await cloud.call("POST", "/v1/projects", {"name": "other"})
        assert status == 201
        other = {"X-Api-Key": project["api_key"]["key"]}
        for method, path in (
            ("GET", f"/v1/deployments/{deployment}"),
            ("GET", "/v1/agents/weather/deployments"),
        ):
            async with http.request(method, cloud.url + path, headers=other) as r:
                assert r.status == 404 and "error" in await r.json()
        async with http.get(cloud.url + "/v1/callbacks/secret", headers=other) as r:
            theirs = (await r.json())["secret"]
    status, ours = await cloud.call("GET", "/v1/callbacks/secret")
    assert ours["secret"] != theirs
    status, rotated = await cloud.call("POST", "/v1/callbacks/secret/rotate")
    assert status == 200 and rotated["secret"] != ours["secret"]


async def test_papayya_agents_register_then_run(cloud: Cloud) -> None:
    module = cloud.tmp / "registered.py"
    module.write_text(AGENT)
    env = {**os.environ, "PAPAYYA_BASE_URL": cloud.url, "PAPAYYA_API_KEY": cloud.key}

    async def cli(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, out.decode()

    code, out = await cli("agents", "register", str(module), "--agent", "registered")
    assert code == 0 and "version 1 ready" in out, out
    code, out = await cli("agents", "register", str(module), "--agent", "registered")
    assert code == 0 and "version 2 ready" in out, out
    code, out = await cli("run", "registered", "--wait", "--input", json.dumps({"question": "x"}))
    assert code == 0 and "completed" in out.splitlines()[-1], out
    bad = cloud.tmp / "notes.txt"
    bad.write_text("x")
    code, out = await cli("agents", "register", str(bad), "--agent", "registered")
    assert code != 0 and "not a Python file" in out
    code, out = await cli("agents", "register", str(cloud.tmp / "missing.py"), "--agent", "r")
    assert code != 0 and "does not exist" in out


GREEDY = """
import os, signal, time
from openai import OpenAI
from papayya import agent

@agent
def greedy():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # and it will not stop politely either
    client = OpenAI(max_retries=0)
    while True:
        try:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "more " * 50}])
        except Exception:
            pass  # swallows the 402 the budget answers
        with open(os.environ["SIDE_EFFECTS"], "a") as f:
            f.write("call\\n")
        time.sleep(0.1)
"""


async def test_agent_code_that_swallows_the_budget_402_is_stopped(cloud: Cloud) -> None:
    await cloud.register("greedy", GREEDY)
    run_id = await cloud.start("greedy", budget_total_tokens=200)
    run = await cloud.wait(run_id, timeout=30)
    assert run.status == "budget_exceeded"
    ended = time.monotonic()
    assert cloud.services.worker is not None

    async def stopped() -> bool:
        return cloud.services.worker is not None and cloud.services.worker.active == 0

    await wait_for(stopped, timeout=15)
    assert time.monotonic() - ended < 2 * 2 + 3  # grace to exit, grace after SIGTERM, then KILL
    calls = len(cloud.side_effects())
    await asyncio.sleep(0.5)
    assert len(cloud.side_effects()) == calls  # nothing runs any more
    assert run.committed.total_tokens <= 200

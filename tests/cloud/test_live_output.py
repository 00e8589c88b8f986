"""The agent's output while its run runs (issue 19), with a real server, worker and process
runtime: ``papayya runs logs -f`` (API and direct mode) prints a line the agent wrote while
the agent still waits on the test, the recorded output stays within its bound across the
worker's flushes, and a project secret printed mid-run is redacted in the flushed event."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from papayya.domain import events as ev
from tests.support.cloud import Cloud, running_cloud
from workers.worker import OUTPUT_EVENT_CHARS, OUTPUT_EVENT_LINES, Attempt

pytestmark = pytest.mark.timeout(120)

SECRET = "live-secret-value-" + "q" * 16
# A step (so a follower shows it has joined), then waits for the test's "go" file, prints,
# waits for "flood" to flood its output past the bound, and for "release" to end.
GATED = """
import os, time
from pathlib import Path
from papayya import agent, current_run

def wait_for(path):
    while not Path(path).exists():
        time.sleep(0.05)

@agent
def gated(task):
    current_run().task("warm", lambda: 1)
    wait_for(task["go"])
    print("hello while running", flush=True)
    print("token " + os.environ.get("API_TOKEN", "none"), flush=True)
    wait_for(task["flood"])
    for i in range(300):
        print(f"flood {i:03d} " + "f" * 400, flush=True)
    wait_for(task["release"])
    print("released", flush=True)
    return {"ok": True}
"""


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    monkeypatch.setenv("PAPAYYA_OUTPUT_FLUSH_SECONDS", "0.2")
    async with running_cloud(dsn, monkeypatch, tmp_path) as running:
        yield running


async def read_until(stream: asyncio.StreamReader, text: str, seen: list[str]) -> None:
    while True:
        line = (await asyncio.wait_for(stream.readline(), 30)).decode()
        assert line, f"the CLI ended before printing {text!r}: {seen}"
        seen.append(line.rstrip("\n"))
        if text in line:
            return


@pytest.mark.parametrize("mode", ["api", "direct"])
async def test_logs_follow_prints_output_while_the_agent_still_runs(
    cloud: Cloud, mode: str
) -> None:
    status, projects = await cloud.call("GET", "/v1/projects")
    assert status == 200
    secret = {"name": "API_TOKEN", "value": SECRET}
    assert (await cloud.call("POST", f"/v1/projects/{projects[0]['id']}/secrets", secret))[0] == 200
    await cloud.register("gated", GATED)
    go, flood, release = (cloud.tmp / name for name in ("go", "flood", "release"))
    gates = {"go": str(go), "flood": str(flood), "release": str(release)}
    run_id = await cloud.start("gated", input=gates)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    if mode == "api":
        env |= {"PAPAYYA_BASE_URL": cloud.url, "PAPAYYA_API_KEY": cloud.key}
    else:
        env |= {"PAPAYYA_DATABASE_URL": cloud.dsn}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "runs", "logs", run_id, "-f", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    seen: list[str] = []
    try:
        await read_until(process.stdout, "warm", seen)  # following: its step came live
        go.touch()
        await read_until(process.stdout, "  | hello while running", seen)
        # Shown while the agent waits on the test: the run has not ended.
        assert (await cloud.runs.load(run_id)).status == "running"
        assert not release.exists()
        await read_until(process.stdout, "  | token [redacted]", seen)
        flood.touch()
        await read_until(process.stdout, "  | flood ", seen)  # flushed while it floods
        release.touch()
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    shown = seen + out.decode().splitlines()
    assert shown[-1] == f"run {run_id} completed", shown
    assert "  | released" in shown
    assert shown.count("  | hello while running") == 1  # printed live, not again at the end
    assert SECRET not in "\n".join(shown)

    stored = [e for e in await cloud.runs.events(run_id) if isinstance(e, ev.AgentOutput)]
    assert len(stored) > 1 and [e.final for e in stored] == [False] * (len(stored) - 1) + [True]
    flushed = [text for e in stored if not e.final for _, text in e.lines]
    assert "token [redacted]" in flushed
    assert all(SECRET not in text for e in stored for _, text in e.lines)
    recorded = [text for e in stored for _, text in e.lines]
    assert sum(len(t) + 1 for t in recorded) <= OUTPUT_EVENT_CHARS  # across all flushes
    assert len(recorded) <= OUTPUT_EVENT_LINES and len(set(recorded)) == len(recorded)
    assert any(e.truncated for e in stored) and recorded[-1] == "released"
    status, logs = await cloud.call("GET", f"/v1/runs/{run_id}/logs")
    assert status == 200 and logs["attempts"] == [1] and logs["truncated"] is True
    assert [line["text"] for line in logs["data"]] == recorded


class Printed:
    """An attempt's output as a runtime reads it (only its lines matter to a flush)."""

    def __init__(self, *texts: str) -> None:
        self.read = [(float(i), text) for i, text in enumerate(texts)]

    async def wait(self) -> int:
        return 0

    async def stop(self, grace: float) -> None:
        pass

    def output(self) -> str:
        return "\n".join(text for _, text in self.read)

    def lines(self) -> list[tuple[float, str]]:
        return list(self.read)

    def counted(self) -> tuple[int, list[tuple[float, str]]]:
        return len(self.read), list(self.read)


async def test_a_flush_takes_turns_with_other_writers_and_stops_once_the_run_ended(
    cloud: Cloud,
) -> None:
    runs = cloud.runs
    state = await runs.append(
        None, [ev.RunQueued(run_id="flush-1", project_id="p", agent_id="a"),
               ev.RunStarted(attempt=1)],
    )  # fmt: skip
    worker = cloud.in_process_worker()
    handle = Printed("one")
    current = Attempt("flush-1", 1, handle=handle)
    await worker.runs.load("flush-1")  # cached in the worker's repository …
    await runs.append(state, [ev.CancelRequested(reason="r")])  # … then written by another
    await worker._flush(current, ())  # decides again on the fresh state: no lost race
    assert current.output is not None and current.output.seen == 1
    handle.read.append((9.0, "two"))
    state = await runs.load("flush-1")
    await runs.append(state, [ev.RunCancelled(reason="r")])
    await worker._flush(current, ())  # the run has ended: nothing more is flushed
    stored = [e for e in await runs.events("flush-1") if isinstance(e, ev.AgentOutput)]
    assert [(e.lines, e.final) for e in stored] == [(((0.0, "one"),), False)]
    assert current.output.seen == 1

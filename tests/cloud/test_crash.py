"""Resume, don't restart: SIGKILL workers and agent processes at random points while runs
execute; every run completes, and nothing finished before a kill happens again."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from papayya.domain import events as ev
from tests.support.cloud import Cloud, running_cloud

pytestmark = pytest.mark.timeout(240)

RUNS = 20

STEPS = '''
import os, time
from openai import OpenAI
from papayya import agent, current_run, tool

@tool
def note(run: str, i: int) -> dict:
    """Write a side effect the test can count."""
    with open(os.environ["SIDE_EFFECTS"], "a") as f:
        f.write(f"{run}:{i}\\n")
    time.sleep(0.05)
    return {"i": i}

@agent
def stepper(task):
    client = OpenAI(max_retries=0)
    run = current_run().id
    total = 0
    for i in range(3):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"{task} {i}"}])
        note(run=run, i=i)
        total += current_run().task(f"wait{i}", lambda: (time.sleep(0.15), i)[1])
    return {"total": total}
'''


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(
        dsn, monkeypatch, tmp_path, worker=False, lease_seconds=2.0, heartbeat_seconds=0.4,
        max_attempts=50,
    ) as running:  # fmt: skip
        yield running


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


async def test_sigkilled_workers_and_agents_lose_no_run_and_repeat_nothing_finished(
    cloud: Cloud,
) -> None:
    await cloud.register("stepper", STEPS)
    workers = [await cloud.spawn_worker("--concurrency", "4") for _ in range(2)]
    run_ids = [await cloud.start("stepper", input=f"task {n}") for n in range(RUNS)]
    rng = random.Random(7)
    kills = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 150
    while loop.time() < deadline and kills < 10:
        states = [await cloud.runs.load(r) for r in run_ids]
        if all(s.is_terminal for s in states):
            break
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        victim = rng.randrange(len(workers))
        if rng.random() < 0.5:
            agents = children(workers[victim].pid)
            if agents:
                os.kill(rng.choice(agents), signal.SIGKILL)  # an agent (or a warm one)
                kills += 1
        else:
            workers[victim].send_signal(signal.SIGKILL)  # the worker and its agents
            await workers[victim].wait()
            kills += 1
            workers[victim] = await cloud.spawn_worker("--concurrency", "4")
    states = [await cloud.wait(r, timeout=60) for r in run_ids]
    assert kills >= 5
    assert [s.status for s in states] == ["completed"] * RUNS, [
        (s.run_id, s.status, s.error_code, s.error_message)
        for s in states
        if s.status != "completed"
    ]
    assert all(s.output == {"total": 3} for s in states)
    assert sum(s.recoveries for s in states) >= 1

    forwarded = 0
    for state in states:
        events = await cloud.runs.events(state.run_id)
        assert [s.step_number for s in state.steps] == list(range(len(state.steps)))
        done = [s for s in state.steps if s.status == "completed"]
        assert [s.step_type for s in done] == ["response", "checkpoint"] * 3
        live = [e for e in events if isinstance(e, ev.LlmCallRecorded) and not e.replayed]
        # A model call that finished was never forwarded again: each request went out once.
        assert len({e.fingerprint for e in live}) == len(live) == 3
        forwarded += len(live)
        checkpoints = [e.label for e in events if isinstance(e, ev.CheckpointSaved)]
        assert len(checkpoints) == len(set(checkpoints)) == 3
    # Requests in flight at a kill were never answered, so never recorded: at most one per kill.
    assert forwarded <= cloud.fake.stats.total <= forwarded + kills * 4
    effects = Counter(cloud.side_effects())
    assert set(effects) == {f"{r}:{i}" for r in run_ids for i in range(3)}
    # A tool runs again only if it was running when its process was killed.
    assert sum(n - 1 for n in effects.values()) <= kills

"""The CLI's small errors (issue 19), as a user meets them against a running server: input
that is not JSON, agents named by slug, `--wait` printing each step once, `runs cancel` and
`runs resume` reporting what happened, one budget unit, and schedule times in one zone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from papayya.domain import events as ev
from tests.support.api import Api, call, create_agent, create_schedule
from tests.support.cloud import Cloud, running_cloud
from web import keys


def cli_env(api: Api | Cloud, direct: str | None = None) -> dict[str, str]:
    """Through the API, or ``direct`` from the database at that address."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    if direct is not None:
        return env | {"PAPAYYA_DATABASE_URL": direct}
    return env | {"PAPAYYA_BASE_URL": api.url, "PAPAYYA_API_KEY": api.key}


async def cli(api: Api, *args: str, direct: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", *args, env=cli_env(api, direct),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    assert b"Traceback" not in err, err.decode()
    return proc.returncode, out.decode(), err.decode()


class Live:
    """A CLI process whose output the test reads line by line while it runs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, api: Api | Cloud, *args: str, direct: str | None = None) -> Live:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", *args, env=cli_env(api, direct),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def until(self, needle: str, timeout: float = 30) -> str:
        """Read lines until one holds ``needle``; returns it."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"output ended without {needle!r}: {self.lines}")
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if needle in line:
                    return line

    async def finish(self) -> tuple[int, str]:
        out, err = await asyncio.wait_for(self.proc.communicate(), 60)
        self.lines += out.decode().splitlines()
        assert b"Traceback" not in err, err.decode()
        assert self.proc.returncode is not None
        return self.proc.returncode, err.decode()


async def runs_of(api: Api) -> list[str]:
    found = await api.app[keys.STORE].summaries("run")
    return [str(s["run_id"]) for _, _, s in found]


async def start_run(api: Api, http: Any, agent: str, **body: Any) -> str:
    status, run = await call(api, http, "POST", f"/v1/agents/{agent}/runs", body)
    assert status == 201, run
    return str(run["id"])


async def wait_for_event(api: Api, run_id: str, kind: type[ev.RunEvent]) -> None:
    for _ in range(600):
        if any(isinstance(e, kind) for e in await api.app[keys.RUNS].events(run_id)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} has no {kind.__name__}")


async def append(api: Api, run_id: str, *events: ev.RunEvent) -> None:
    runs = api.app[keys.RUNS]
    await runs.append(await runs.load(run_id), list(events))


# -- --input is JSON ------------------------------------------------------------------------


async def test_input_that_is_not_json_is_refused_and_writes_nothing(api: Api, http: Any) -> None:
    await create_agent(api, http, "strict")
    schedule = await create_schedule(api, http, "strict")
    source = await start_run(api, http, "strict", input={"q": 1})
    before = sorted(await runs_of(api))
    for args in [
        ("run", "strict", "--input", "hello world"),
        ("run", "strict", "--input", "{'q': 1}", "--wait"),
        ("runs", "replay", source, "--from-step", "0", "--input", "{broken"),
        ("schedules", "create", "--agent", "strict", "--cron", "@daily", "--input", "nope"),
        ("schedules", "update", schedule["id"], "--input", "[1,"),
    ]:
        code, out, err = await cli(api, *args)
        assert code == 2, (args, out, err)
        assert "--input must be JSON" in err and "'\"text\"'" in err, err
    assert sorted(await runs_of(api)) == before
    status, listed = await call(api, http, "GET", "/v1/schedules")
    assert status == 200 and [s["id"] for s in listed] == [schedule["id"]]
    assert listed[0]["input"] is None
    # A JSON string is the way to give text.
    code, out, err = await cli(api, "run", "strict", "--input", '"hello world"')
    assert code == 0, err
    status, run = await call(api, http, "GET", f"/v1/runs/{out.strip()}")
    assert run["input"] == "hello world"


# -- agents by slug -------------------------------------------------------------------------


async def test_output_names_agents_by_slug(api: Api, http: Any) -> None:
    agent = await create_agent(api, http, "named-one")
    await create_agent(api, http, "named-two")
    mine = await start_run(api, http, "named-one")
    other = await start_run(api, http, "named-two")
    schedule = await create_schedule(api, http, "named-one")

    code, out, err = await cli(api, "runs", "list", "--agent", "named-one")
    assert code == 0, err
    assert mine in out and other not in out
    row = next(line for line in out.splitlines() if mine in line)
    assert "named-one" in row.split() and agent["id"] not in out
    code, out, _ = await cli(api, "runs", "list")
    assert agent["id"] not in out and "named-two" in out
    code, out, _ = await cli(api, "runs", "show", mine)
    assert code == 0 and "agent     named-one" in out and agent["id"] not in out
    code, out, _ = await cli(api, "schedules", "list", "--agent", "named-one")
    assert code == 0 and "named-one" in out and agent["id"] not in out
    # JSON views keep the API's agent_id, and name the agent beside it.
    code, out, _ = await cli(api, "schedules", "get", schedule["id"])
    shown = json.loads(out)
    assert (shown["agent_id"], shown["agent_slug"]) == (agent["id"], "named-one")
    code, out, _ = await cli(api, "webhooks", "create", "--agent", "named-one", "--name", "ci")
    hook = json.loads(out)
    assert code == 0 and hook["agent_slug"] == "named-one", hook


# -- --wait prints each step once -------------------------------------------------------------


async def test_wait_prints_each_step_once(api: Api, http: Any) -> None:
    await create_agent(api, http, "toolish")
    live = await Live.start(api, "run", "toolish", "--input", '{"q": 1}', "--wait")
    run_id = (await live.until("run_")).strip()
    await append(
        api, run_id,
        ev.RunStarted(attempt=1),
        ev.StepStarted(step_number=0, step_type="tool_call"),
        ev.LlmCallRecorded(step_number=0, provider="openai", model="gpt-4o-mini",
                           fingerprint="m0", input_tokens=5, output_tokens=3,
                           tool_calls=({"id": "c1", "name": "search"},)),
        ev.StepCompleted(step_number=0, duration_ms=2.0),
    )  # fmt: skip
    await live.until("step   0")
    # The tool runs after its model call's step ended: the stream sends step 0 again.
    await append(
        api, run_id,
        ev.ToolCallRecorded(step_number=0, tool="search", fingerprint="t0", call_id="c1",
                            output={"hits": 1}),
        ev.StepStarted(step_number=1, step_type="response"),
        ev.LlmCallRecorded(step_number=1, provider="openai", model="gpt-4o-mini",
                           fingerprint="m1", input_tokens=7, output_tokens=2),
        ev.StepCompleted(step_number=1, duration_ms=1.0),
        ev.RunCompleted(output="done"),
    )  # fmt: skip
    code, err = await live.finish()
    assert code == 0, err
    steps = [line for line in live.lines if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["0", "1"], live.lines
    assert live.lines[-1] == f"run {run_id} completed"


# -- runs cancel reports the end state --------------------------------------------------------


async def test_cancel_waits_for_and_prints_the_end_state(api: Api, http: Any) -> None:
    await create_agent(api, http, "stoppable")
    stopped = await start_run(api, http, "stoppable")
    await append(api, stopped, ev.RunStarted(attempt=1))
    live = await Live.start(api, "runs", "cancel", stopped)
    await wait_for_event(api, stopped, ev.CancelRequested)
    await append(api, stopped, ev.RunCancelled(reason="asked"))  # the worker stopped it
    code, err = await live.finish()
    assert code == 0, err
    assert live.lines == [f"run {stopped} cancelled"]

    finished = await start_run(api, http, "stoppable")
    await append(api, finished, ev.RunStarted(attempt=1))
    live = await Live.start(api, "runs", "cancel", finished)
    await wait_for_event(api, finished, ev.CancelRequested)
    await append(api, finished, ev.RunCompleted(output="first"))  # it finished first
    code, _ = await live.finish()
    assert code == 1
    assert live.lines == [f"run {finished} completed (it ended before it could be stopped)"]

    queued = await start_run(api, http, "stoppable")
    code, out, _ = await cli(api, "runs", "cancel", queued)
    assert code == 0 and out.strip() == f"run {queued} cancelled"
    code, _, err = await cli(api, "runs", "cancel", queued)
    assert code == 1 and "cancelled" in err


# -- runs resume --budget-usd, and one budget unit everywhere ---------------------------------


async def exceed(api: Api, run_id: str, attempt: int) -> None:
    await append(api, run_id, ev.RunStarted(attempt=attempt), ev.BudgetExceeded(limit="usd"))


async def test_resume_with_a_new_budget(api: Api, http: Any, dsn: str) -> None:
    await create_agent(api, http, "spender")
    run_id = await start_run(api, http, "spender", budget_cents=10)
    await exceed(api, run_id, 1)
    runs = api.app[keys.RUNS]
    written = len(await runs.events(run_id))
    for bad, message in [
        (("--budget-usd", "-1"), "-1"),
        (("--budget-usd", "lots"), "not an amount of dollars"),
        (("--budget-usd", "0.001"), "fraction of a cent"),
        (("--budget-usd", "1", "--budget-cents", "100"), "not both"),
        (("--budget-cents", "1.5"), "1.5"),
        ((), "give the new budget"),
    ]:
        code, _, err = await cli(api, "runs", "resume", run_id, *bad)
        assert code == 2 and message in err, (bad, err)
    assert len(await runs.events(run_id)) == written

    code, out, err = await cli(api, "runs", "resume", run_id, "--budget-usd", "2.50")
    assert code == 0, err
    assert out.strip() == f"run {run_id} queued (budget $2.50)"
    status, run = await call(api, http, "GET", f"/v1/runs/{run_id}")
    assert status == 200 and run["status"] == "queued" and run["budget_cents"] == 250
    resumed = [e for e in await runs.events(run_id) if isinstance(e, ev.RunResumed)]
    assert [e.budget_micro_usd for e in resumed] == [2_500_000]

    # --budget-cents is the same budget in cents.
    await exceed(api, run_id, 2)
    code, out, err = await cli(api, "runs", "resume", run_id, "--budget-cents", "300")
    assert code == 0 and out.strip() == f"run {run_id} queued (budget $3.00)", err
    resumed = [e for e in await runs.events(run_id) if isinstance(e, ev.RunResumed)]
    assert [e.budget_micro_usd for e in resumed] == [2_500_000, 3_000_000]
    # Not budget_exceeded (it is queued): the server refuses, nothing is written.
    written = len(await runs.events(run_id))
    code, _, err = await cli(api, "runs", "resume", run_id, "--budget-usd", "9")
    assert code == 1 and "Traceback" not in err
    assert len(await runs.events(run_id)) == written
    # Straight from the database, as an operator without the API would.
    await exceed(api, run_id, 3)
    code, out, err = await cli(api, "runs", "resume", run_id, "--budget-usd", "4", direct=dsn)
    assert code == 0 and out.strip() == f"run {run_id} queued (budget $4.00)", err
    resumed = [e for e in await runs.events(run_id) if isinstance(e, ev.RunResumed)]
    assert [e.budget_micro_usd for e in resumed] == [2_500_000, 3_000_000, 4_000_000]


async def test_budget_cents_is_an_alias_of_budget_usd(api: Api, http: Any) -> None:
    code, out, err = await cli(api, "agents", "create", "--name", "A", "--slug", "in-usd",
                               "--budget-usd", "0.50")  # fmt: skip
    assert code == 0 and json.loads(out)["config"]["budget_usd"] == "0.50", err
    code, out, err = await cli(api, "agents", "create", "--name", "B", "--slug", "in-cents",
                               "--budget-cents", "50")  # fmt: skip
    assert code == 0 and json.loads(out)["config"]["budget_usd"] == "0.50", err
    code, out, err = await cli(api, "agents", "update", "in-cents", "--budget-cents", "125")
    assert code == 0 and json.loads(out)["config"]["budget_usd"] == "1.25", err

    budgets = []
    for flag, value in [("--budget-usd", "0.75"), ("--budget-cents", "75")]:
        code, out, err = await cli(api, "run", "in-usd", flag, value)
        assert code == 0, err
        status, run = await call(api, http, "GET", f"/v1/runs/{out.strip()}")
        assert status == 200, run
        budgets.append(run["budget_cents"])
    assert budgets == [75, 75]

    made = []
    for flag, value in [("--budget-usd", "0.30"), ("--budget-cents", "30")]:
        code, out, err = await cli(api, "schedules", "create", "--agent", "in-usd",
                                   "--cron", "@daily", flag, value)  # fmt: skip
        assert code == 0, err
        made.append(json.loads(out)["budget_cents"])
    assert made == [30, 30]
    code, _, err = await cli(api, "run", "in-usd", "--budget-usd", "-0.5")
    assert code == 2 and "-0.5" in err


# -- schedule times in one zone per view ------------------------------------------------------


def _times(text: str) -> list[datetime]:
    found = []
    for line in text.splitlines()[1:]:
        cells = line.split("  ")
        for cell in cells:
            try:
                found.append(datetime.strptime(cell.strip(), "%Y-%m-%d %H:%M:%S"))
            except ValueError:
                continue
    return found


async def test_schedule_times_show_in_one_zone_per_view(api: Api, http: Any) -> None:
    await create_agent(api, http, "timed")
    paris = await create_schedule(api, http, "timed", cron_expression="0 9 * * *",
                                  timezone="Europe/Paris")  # fmt: skip
    await create_schedule(api, http, "timed", cron_expression="0 9 * * *",
                          timezone="America/New_York")  # fmt: skip
    code, out, err = await cli(api, "schedules", "list")
    assert code == 0, err
    header = out.splitlines()[0]
    assert "next (UTC)" in header and "last (UTC)" in header
    # 09:00 in Paris and in New York, both shown in UTC: 07:00/08:00 and 13:00/14:00.
    hours = sorted(t.hour for t in _times(out))
    assert hours in ([7, 13], [8, 13], [7, 14], [8, 14]), out
    paris_next = datetime.fromisoformat(paris["next_fire_times"][0])
    utc_shown = paris_next.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%d %H:%M:%S")
    assert utc_shown in out

    code, out, _ = await cli(api, "schedules", "list", "--tz", "Europe/Paris")
    assert "next (Europe/Paris)" in out.splitlines()[0]
    assert paris_next.strftime("%Y-%m-%d %H:%M:%S") in out

    code, out, _ = await cli(api, "schedules", "get", paris["id"])
    shown = json.loads(out)
    times = [*shown["next_fire_times"], shown["created_at"], shown["updated_at"]]
    assert all(t.endswith("+00:00") for t in times), times
    assert datetime.fromisoformat(shown["next_fire_times"][0]) == paris_next
    code, out, _ = await cli(api, "schedules", "get", paris["id"], "--tz", "Asia/Tokyo")
    assert all(t.endswith("+09:00") for t in json.loads(out)["next_fire_times"])

    code, out, _ = await cli(api, "schedules", "fires", paris["id"])
    assert code == 0 and out.splitlines()[0].startswith("fire at (UTC)")
    code, _, err = await cli(api, "schedules", "list", "--tz", "Mars/Olympus")
    assert code == 2 and "unknown timezone" in err


# -- runs logs -f after a worker is killed ----------------------------------------------------

PATIENT = """
import os, time
from pathlib import Path
from papayya import agent, current_run

@agent
def patient(task):
    current_run().task("first", lambda: 1)
    go = Path(os.environ["SIDE_EFFECTS"]).with_name("go")
    while not go.exists():
        time.sleep(0.05)
    return {"done": True}
"""
LEASE_SECONDS = 4.0


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["api", "direct"])
async def test_logs_follow_says_it_waits_for_the_lease_of_a_killed_worker(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str
) -> None:
    async with running_cloud(
        dsn, monkeypatch, tmp_path, worker=False, lease_seconds=LEASE_SECONDS,
        heartbeat_seconds=0.5,
    ) as cloud:  # fmt: skip
        await cloud.register("patient", PATIENT)
        worker = await cloud.spawn_worker()
        run_id = await cloud.start("patient", input="wait")
        direct = dsn if mode == "direct" else None
        live = await Live.start(cloud, "runs", "logs", "-f", run_id, direct=direct)
        await live.until("step   0")
        # Mid-run: step 0 is done, the agent waits, and its worker holds a fresh lease.
        status, run = await cloud.call("GET", f"/v1/runs/{run_id}")
        assert status == 200 and run["status"] == "running", run
        assert run["lease"] is not None and run["lease"]["expires_in_seconds"] > 0, run
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        state = await cloud.runs.load(run_id)
        assert state.status == "running" and len(state.steps) == 1  # the kill landed mid-run

        waiting = await live.until("waiting for the lease (", timeout=LEASE_SECONDS + 10)
        left = int(waiting.split("(", 1)[1].split(" s)", 1)[0])
        assert 0 <= left <= LEASE_SECONDS, waiting
        # The sweeper finds the expired lease and queues the run again; a new worker resumes.
        await live.until(f"run {run_id} is queued again", timeout=30)
        (cloud.tmp / "go").touch()
        await cloud.spawn_worker()
        code, err = await live.finish()
        assert code == 0, err
        assert live.lines[-1] == f"run {run_id} completed", live.lines
        done = await cloud.wait(run_id)
        assert done.status == "completed" and done.attempt == 2 and done.output == {"done": True}

"""``papayya runs logs`` and ``runs show`` in direct mode (straight from the database): the
agent's output between the steps, how a failed run ended, a replay's recorded steps."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta

from eventstore.postgres import PostgresEventStore
from papayya.domain import events as ev
from papayya.runs import Runs

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def cli(dsn: str, *args: str) -> tuple[int, list[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env["PAPAYYA_DATABASE_URL"] = dsn
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "runs", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines(), err.decode()


async def failed_run(dsn: str, run_id: str) -> None:
    store = await PostgresEventStore.connect(dsn, min_size=1, max_size=2, notify=False)
    try:
        await Runs(store).append(
            None,
            [
                ev.RunQueued(run_id=run_id, project_id="p", agent_id="a", at=at(0)),
                ev.RunStarted(attempt=1, at=at(1)),
                ev.StepStarted(step_number=0, step_type="checkpoint", label="fetch", at=at(2)),
                ev.CheckpointSaved(step_number=0, label="fetch", fingerprint="f", result=1),
                ev.StepCompleted(step_number=0, at=at(3)),
                ev.StepStarted(step_number=1, step_type="checkpoint", label="parse", at=at(5)),
                ev.CheckpointSaved(step_number=1, label="parse", fingerprint="g", result=2),
                ev.StepCompleted(step_number=1, at=at(6)),
                ev.RunFailed(code="agent_error", message="ValueError: bad page", at=at(7)),
                ev.AgentOutput(
                    attempt=1,
                    lines=((at(2.5).timestamp(), "fetching"), (at(4).timestamp(), "parsing")),
                    at=at(8),
                ),
            ],
        )
    finally:
        await store.close()


async def test_logs_put_the_agents_output_between_its_steps_and_end_with_the_error(
    dsn: str,
) -> None:
    await failed_run(dsn, "logs-1")
    code, lines, err = await cli(dsn, "logs", "logs-1")
    assert code == 0, err
    assert [line.split()[0:2] if line.startswith("step") else [line] for line in lines] == [
        ["  | fetching"],
        ["step", "0"],
        ["  | parsing"],
        ["step", "1"],
        ["run logs-1 failed (agent_error: ValueError: bad page)"],
    ]
    code, followed, err = await cli(dsn, "logs", "logs-1", "-f")
    assert code == 0, err
    assert followed == lines  # -f on a run that has ended prints it whole, and how it ended

    code, replayed, err = await cli(dsn, "replay", "logs-1", "--from-step", "1")
    assert code == 0, err
    code, shown, err = await cli(dsn, "show", replayed[0])
    assert code == 0, err
    rows = [line for line in shown if line.startswith("0 ")]
    assert len(rows) == 1 and "fetch" in rows[0] and "(recorded)" in rows[0]
    assert not any(line.startswith("1 ") for line in shown)  # from step 1 on: not run yet


async def test_logs_of_a_missing_run_is_an_error(dsn: str) -> None:
    code, _, err = await cli(dsn, "logs", "nope")
    assert code == 1 and "nope" in err


async def test_logs_follow_prints_the_output_recorded_after_the_end_then_the_error(
    dsn: str,
) -> None:
    store = await PostgresEventStore.connect(dsn, min_size=1, max_size=2, notify=False)
    runs = Runs(store)
    try:
        state = await runs.append(
            None, [ev.RunQueued(run_id="live-1", project_id="p", agent_id="a"),
                   ev.RunStarted(attempt=1)],
        )  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "runs", "logs", "live-1", "-f",
            env={**env, "PAPAYYA_DATABASE_URL": dsn},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        state = await runs.append(
            state,
            [ev.StepStarted(step_number=0, step_type="checkpoint", label="fetch"),
             ev.CheckpointSaved(step_number=0, label="fetch", fingerprint="f", result=1),
             ev.StepCompleted(step_number=0)],
        )  # fmt: skip
        first = await asyncio.wait_for(process.stdout.readline(), 30)
        assert first.decode().startswith("step   0")  # it follows: the step is printed live
        state = await runs.append(state, [ev.RunFailed(code="agent_crashed", message="exit 3")])
        now = datetime.now(UTC).timestamp()
        await runs.append(state, [ev.AgentOutput(attempt=1, lines=((now, "Traceback …"),))])
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        assert out.decode().splitlines() == [
            "  | Traceback …",
            "run live-1 failed (agent_crashed: exit 3)",
        ]
    finally:
        await store.close()

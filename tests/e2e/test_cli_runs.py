"""``papayya runs …`` in direct mode, as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from papayya import papayya


def cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env["PAPAYYA_DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "runs", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_runs_list_show_state_replay_cancel_logs(dsn: str) -> None:
    with papayya(dsn) as client:
        run = client.run("cli-agent", run_id="cli-1")
        run.task("fetch", lambda: {"n": 1})()
        run.task("summarise", lambda: "short")()
        run.complete("ok")
        client.run("other-agent", run_id="cli-2")

    listed = cli(dsn, "list", "--agent", "cli-agent")
    assert listed.returncode == 0, listed.stderr
    assert "cli-1" in listed.stdout and "cli-2" not in listed.stdout
    running = cli(dsn, "list", "--status", "running")
    assert "cli-2" in running.stdout and "cli-1" not in running.stdout

    shown = cli(dsn, "show", "cli-1")
    assert shown.returncode == 0
    assert "completed" in shown.stdout and "summarise" in shown.stdout and "fetch" in shown.stdout

    state = cli(dsn, "state", "cli-1", "--at-step", "0")
    folded = json.loads(state.stdout)
    assert len(folded["steps"]) == 1 and folded["steps"][0]["output"] == {"n": 1}

    logs = cli(dsn, "logs", "cli-1")
    assert logs.stdout.count("step ") == 2

    replayed = cli(dsn, "replay", "cli-1", "--from-step", "1")
    new_id = replayed.stdout.strip()
    assert replayed.returncode == 0 and new_id.startswith("run_")
    assert "replay of cli-1 from step 1" in cli(dsn, "show", new_id).stdout
    cancelled = cli(dsn, "cancel", new_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    again = cli(dsn, "cancel", new_id)
    assert again.returncode == 1 and "already cancelled" in again.stderr


def test_bad_input_exits_non_zero(dsn: str) -> None:
    missing = cli(dsn, "show", "no-such-run")
    assert missing.returncode == 1 and "not found" in missing.stderr
    bad_step = cli(dsn, "state", "no-such-run", "--at-step", "-1")
    assert bad_step.returncode == 2
    with papayya(dsn) as client:
        client.run("a", run_id="short").task("one", lambda: 1)()
    too_far = cli(dsn, "state", "short", "--at-step", "7")
    assert too_far.returncode == 1 and "step" in too_far.stderr
    replay_far = cli(dsn, "replay", "short", "--from-step", "9")
    assert replay_far.returncode == 1 and "only 1 steps" in replay_far.stderr


def test_keys_create_prints_a_working_key(dsn: str) -> None:
    import asyncio

    from papayya.readmodels import projects

    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env["PAPAYYA_DATABASE_URL"] = dsn

    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "server.cli", "keys", "create", *args],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip

    made = keys("--project", "ops", "--name", "laptop")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("cpk_") and "created project 'ops'" in made.stderr
    again = keys("--project", "ops")
    assert again.returncode == 0 and again.stdout.strip() != key and "created" not in again.stderr
    bad = keys("--project", "")
    assert bad.returncode == 2

    async def check() -> str | None:
        import asyncpg

        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:
            return await projects.authenticate(pool, key)
        finally:
            await pool.close()

    assert asyncio.run(check()) is not None

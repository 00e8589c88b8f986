"""A worker checks at start that its agents will reach the API of its own installation: a
control URL that does not answer, or that serves another database, stops it with a message
that says so, before it claims any run."""

from __future__ import annotations

import asyncio
import sys
import uuid

import pytest

from tests.support.api import running_api
from tests.support.cloud import REDIS_URL
from tests.support.db import cloned_database
from tests.support.operator import bare_env, free_port, work_dir

pytestmark = pytest.mark.timeout(180)


async def worker(control_url: str, dsn: str, *args: str, **extra: str) -> tuple[int, str]:
    """``papayya worker ARGS`` on ``dsn`` with agents pointed at ``control_url``."""
    with work_dir() as work:
        env = bare_env(
            PAPAYYA_DATABASE_URL=dsn, PAPAYYA_REDIS_URL=REDIS_URL,
            PAPAYYA_QUEUE_NAME=f"papayya:test:{uuid.uuid4().hex}",
            PAPAYYA_CONTROL_URL=control_url, PAPAYYA_DATA_DIR=str(work / "data"), **extra,
        )  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "worker", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_a_control_url_that_does_not_answer_is_refused(dsn: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    # A worker waits for an API that starts beside it; not here, where none ever will.
    code, out = await worker(url, dsn, PAPAYYA_CONTROL_WAIT_SECONDS="0")
    assert code == 1
    assert f"the control URL {url} (PAPAYYA_CONTROL_URL) does not answer" in out, out
    assert "Traceback" not in out


async def test_a_control_url_of_another_installation_is_refused(
    dsn: str, admin_dsn: str, template_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        cloned_database(admin_dsn, template_db) as other_dsn,
        running_api(other_dsn, monkeypatch) as other,
    ):
        code, out = await worker(other.url, dsn)
    assert code == 1
    assert f"the control URL {other.url} (PAPAYYA_CONTROL_URL) serves another installation" in out
    assert "Traceback" not in out


async def test_a_control_url_of_its_own_installation_is_accepted(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_api(dsn, monkeypatch) as api:
        code, out = await worker(api.url, dsn, "--burst")
    assert code == 0, out

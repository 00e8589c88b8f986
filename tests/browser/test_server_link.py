"""``papayya server`` as a user starts it prints a one-time login link; opening it in the
browser signs in to the dashboard."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import open_dash
from tests.support.cloud import REDIS_URL, free_port
from tests.support.db import cloned_database

pytestmark = pytest.mark.asyncio(loop_scope="session")
LINK = re.compile(r"Dashboard: (http://\S+/login#token=\S+)")


async def drain(
    process: asyncio.subprocess.Process, lines: list[str], found: asyncio.Future[str]
) -> None:
    """Read the server's output (so it never blocks on a full pipe), noting the link."""
    assert process.stdout is not None
    async for raw in process.stdout:
        line = raw.decode(errors="replace")
        lines.append(line)
        match = LINK.search(line)
        if match and not found.done():
            found.set_result(match.group(1))


async def test_the_server_prints_a_login_link_that_signs_in(
    browser: Browser, admin_dsn: str, template_db: str, tmp_path: Path
) -> None:
    port = free_port()
    async with cloned_database(admin_dsn, template_db) as dsn:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
        env |= {
            "PAPAYYA_DATABASE_URL": dsn,
            "PAPAYYA_REDIS_URL": REDIS_URL,
            "PAPAYYA_QUEUE_NAME": f"papayya:test:link-{port}",
            "PAPAYYA_DATA_DIR": str(tmp_path / "data"),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "server", "--port", str(port),
            "--concurrency", "0", env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        lines: list[str] = []
        found: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        reader = asyncio.create_task(drain(process, lines, found))
        try:
            try:
                link = await asyncio.wait_for(asyncio.shield(found), 60)
            except TimeoutError:
                raise AssertionError("no login link printed:\n" + "".join(lines)) from None
            assert link.startswith(f"http://127.0.0.1:{port}/login#token=")
            context, dash = await open_dash(browser, f"http://127.0.0.1:{port}", "", tmp_path)
            try:
                await dash.page.goto(link)
                page = dash.page
                await expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
                await expect(page.locator("#project-name")).to_have_text("default")
                await dash.shot("signed-in-by-link")
                assert not dash.unexpected_errors(), dash.errors
            finally:
                await context.close()
        finally:
            process.send_signal(signal.SIGINT)
            await asyncio.wait_for(process.wait(), 30)
            await reader

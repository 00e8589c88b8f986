"""The dashboard in a real browser: Debian's Chromium driven by Playwright for Python.

One stack for the whole session (API, gateway in front of the fake provider, projectors,
dispatcher and an in-process worker running real agents with the process runtime) and one
browser; each test gets a fresh browser context (its own storage) whose console errors and
page errors fail the test. Every test here is marked ``browser``; none is skipped when
Chromium is missing: they fail, since CI runs `make services` (which installs it) first.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    async_playwright,
)

from projections.service import Projections
from tests.support.browser import Dash, open_dash
from tests.support.cloud import Cloud, running_cloud
from tests.support.db import cloned_database
from web import keys

CHROMIUM = Path(os.environ.get("PAPAYYA_CHROMIUM", "/usr/bin/chromium"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.timeout(90))


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make services` (or -m 'not browser')")
    return CHROMIUM


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stack(
    admin_dsn: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cloud]:
    """The whole control plane with a worker, and live projectors (the runs list and the
    cost pages read the read models)."""
    patch = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("browser-stack")
    try:
        async with (
            cloned_database(admin_dsn, template_db) as dsn,
            running_cloud(dsn, patch, tmp, heartbeat_seconds=0.5, lease_seconds=5) as cloud,
        ):
            projections = Projections(cloud.app[keys.STORE], dsn, poll_interval=0.2)
            task = asyncio.create_task(projections.run(), name="browser projectors")
            yield cloud
            projections.stop()
            await asyncio.wait_for(task, 10)
    finally:
        patch.undo()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def dash(browser: Browser, stack: Cloud, tmp_path: Path) -> AsyncIterator[Dash]:
    """A fresh tab; the test fails if any page logged an error."""
    context, opened = await open_dash(browser, stack.url, stack.key, tmp_path)
    yield opened
    await context.close()
    assert not opened.unexpected_errors(), opened.errors


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path

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
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    async_playwright,
    expect,
)

from projections.service import Projections
from tests.conftest import cloned_database
from tests.integration.cloud_support import Cloud, running_cloud
from web import keys

CHROMIUM = Path(os.environ.get("PAPAYYA_CHROMIUM", "/usr/bin/chromium"))
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# Agents the tests start. SLOW checkpoints a task every STEP_SECONDS so the page sees steps
# arrive over SSE one by one.
SLOW = """
import time
from papayya import agent, current_run

@agent
def slow(task):
    def work(i):
        time.sleep(task.get("pause", 0.5))
        return i

    total = 0
    for i in range(task.get("steps", 4)):
        total += current_run().task(f"step-{i}", lambda i=i: work(i))
    return {"total": total}
"""

# CRASHY's first attempt dies after its first task; the next one resumes from the recording.
CRASHY = """
import os
from papayya import agent, current_run

@agent
def crashy(task):
    run = current_run()
    first = run.task("before-crash", lambda: 1)
    marker = os.environ["SIDE_EFFECTS"] + "." + run.id
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return {"sum": first + run.task("after-crash", lambda: 2)}
"""


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


@dataclass
class Dash:
    """A signed-out browser tab on the dashboard, with what its console said."""

    page: Page
    url: str
    key: str
    shots: Path
    errors: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    async def goto(self, path: str) -> None:
        await self.page.goto(self.url + path)

    async def sign_in(self, remember: bool = False) -> None:
        await self.goto("/login")
        await self.page.get_by_label("API key").fill(self.key)
        if remember:
            await self.page.get_by_label("Keep me signed in on this device").check()
        await self.page.get_by_role("button", name="Sign in").click()
        await expect(self.page.get_by_role("heading", name="Overview", level=1)).to_be_visible()

    async def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allowed)]


def _collect(dash: Dash) -> None:
    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            dash.errors.append(f"console: {message.text} ({message.location.get('url')})")

    dash.page.on("console", on_console)
    dash.page.on("pageerror", lambda error: dash.errors.append(f"pageerror: {error}"))


async def open_dash(
    browser: Browser, url: str, key: str, shots: Path, viewport: dict[str, int] = LAPTOP
) -> tuple[BrowserContext, Dash]:
    context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    page = await context.new_page()
    dash = Dash(page, url, key, shots)
    _collect(dash)
    return context, dash


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

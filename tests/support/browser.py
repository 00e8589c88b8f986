"""The dashboard in a browser tab: the agents the browser tests start, the viewports they use,
and a tab (``Dash``) that keeps what its console said."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, expect

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

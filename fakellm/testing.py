"""Run a fake provider on a loopback port for a test: ``running_fake`` (async) or, for code that
calls the providers synchronously, ``running_fake_in_thread``.

    async with running_fake(FakeConfig(text="hi")) as fake:
        client = AsyncOpenAI(base_url=fake.openai_base_url, api_key="sk-test")
        fake.script.append(Reply(tool_calls=[ToolCall("search", {"q": "x"})]))
        ...
        assert fake.stats.by_route["/v1/chat/completions"] == 1
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fakellm.app import create_app
from fakellm.config import FakeConfig, Reply
from fakellm.state import FAKE, FakeState, FakeStats


@dataclass(frozen=True)
class FakeServer:
    """A running fake: where it listens, and its live state for assertions and scripting."""

    url: str
    app: web.Application

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def state(self) -> FakeState:
        return self.app[FAKE]

    @property
    def stats(self) -> FakeStats:
        return self.state.stats

    @property
    def script(self) -> deque[Reply]:
        return self.state.script

    @property
    def config(self) -> FakeConfig:
        return self.state.config

    def configure(self, patch: dict[str, Any] | None = None, **changes: Any) -> FakeConfig:
        """Merge a partial config, e.g. ``configure(errors=Errors(fail_next=1, status=429))``."""
        return self.state.configure(patch, **changes)

    def reset(self) -> None:
        self.state.reset()


@asynccontextmanager
async def running_fake(
    config: FakeConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeServer]:
    """Serve a fake on ``host:port`` (port 0: a free one) in the current event loop."""
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        yield FakeServer(f"http://{host}:{bound}", app)
    finally:
        await runner.cleanup()


@contextmanager
def running_fake_in_thread(
    config: FakeConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[FakeServer]:
    """``running_fake`` on an event loop of its own thread, so that blocking clients can call it.

    Change its state (``script``, ``configure``) between calls, not while one is in flight.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-llm", daemon=True)
    thread.start()
    context = running_fake(config, host=host, port=port)
    try:
        server = asyncio.run_coroutine_threadsafe(context.__aenter__(), loop).result(30)
        try:
            yield server
        finally:
            stop = context.__aexit__(None, None, None)
            asyncio.run_coroutine_threadsafe(stop, loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

"""Real tool servers on loopback for the built-in agent loop's tests: an HTTP tool (a small
aiohttp app that counts and keeps what it received) and an MCP server built with the ``mcp``
SDK's server side, served by uvicorn in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ToolServer:
    url: str
    received: list[tuple[dict[str, str], Any]] = field(default_factory=list)

    def bodies(self) -> list[Any]:
        return [body for _, body in self.received]


@asynccontextmanager
async def running_http_tool(
    answer: Callable[[Any], Awaitable[web.StreamResponse]] | None = None,
) -> AsyncIterator[ToolServer]:
    """``POST /tool`` keeps the headers and JSON body it got and answers with ``answer(body)``
    (default: a weather report for the city asked)."""
    server = ToolServer("")

    async def default(body: Any) -> web.StreamResponse:
        return web.json_response({"city": body.get("city"), "sky": "sunny", "celsius": 21})

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        server.received.append((dict(request.headers), body))
        return await (answer or default)(body)

    app = web.Application()
    app.router.add_post("/tool", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/tool"
    try:
        yield server
    finally:
        await runner.cleanup()


@dataclass
class McpServerRunning:
    url: str
    calls: list[tuple[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # of each HTTP request


@asynccontextmanager
async def running_mcp_server() -> AsyncIterator[McpServerRunning]:
    """An MCP server (streamable HTTP at ``/mcp``) with tools ``forecast``, ``broken`` (it
    raises) and ``secret``."""
    import uvicorn
    from mcp.server.fastmcp import FastMCP

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    running = McpServerRunning(f"http://127.0.0.1:{port}/mcp")
    server = FastMCP("weather", host="127.0.0.1", port=port, stateless_http=True)

    @server.tool()
    def forecast(city: str) -> str:
        """Tomorrow's weather in a city."""
        running.calls.append(("forecast", city))
        return f"Tomorrow in {city}: rain, 14 C"

    @server.tool()
    def broken(city: str) -> str:
        """A tool that fails."""
        raise RuntimeError(f"no data for {city}")

    @server.tool()
    def secret(city: str) -> str:
        """A tool the allow-list leaves out."""
        running.calls.append(("secret", city))
        return "never offered"

    app = server.streamable_http_app()

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            running.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await app(scope, receive, send)

    config = uvicorn.Config(
        recording, host="127.0.0.1", port=port, log_level="warning",
        lifespan="on",
    )  # fmt: skip
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve())
    while not uv.started:
        await asyncio.sleep(0.02)
        if task.done():
            task.result()
    try:
        yield running
    finally:
        uv.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)

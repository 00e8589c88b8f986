"""The built-in loop's tools (issue 17): HTTP tools and the tools of MCP servers.

Every failure of a tool (refused address, timeout, HTTP error, an answer over the size
limit, an MCP error) comes back as a ``ToolResult`` with ``error`` set: the loop records it
and hands it to the model, as a provider's tool-use convention expects; it never raises.

HTTP tools get the arguments as a JSON POST signed as callbacks are (Standard Webhooks with
the project's callback secret, ``webhook-id`` fixed per run and call so that a receiver can
drop the one repeat a crash may cause), through the same URL guard.

A tool's ``headers`` may take values from the project's secrets (``SecretHeader``), which
the worker opened for this attempt (``Launch.secrets``). A secret that is missing is the
tool's error, naming the secret; no value is ever written into a result, an event or a log.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import msgspec

from papayya import signing, urlguard
from papayya.errors import PapayyaError
from papayya.readmodels.agents import Headers, HttpTool, McpServer, SecretHeader

MAX_RESPONSE_BYTES: Final = 64 * 1024
MCP_TIMEOUT_SECONDS: Final = 30.0
ERROR_CHARS: Final = 2000


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the model is told of it."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    output: Any = None
    error: str | None = None
    duration_ms: float = 0.0


def text_of(result: ToolResult) -> str:
    """What the model reads: text as is, anything else as canonical JSON (sorted keys), so a
    result read back from the store (JSONB reorders keys) gives the model the same bytes and
    the next request the same fingerprint."""
    if result.error is not None:
        return f"error: {result.error}"
    if isinstance(result.output, str):
        return result.output
    return json.dumps(result.output, sort_keys=True, ensure_ascii=False)


class MissingSecret(ValueError):
    """A header names a secret the project does not have."""


def resolve_headers(declared: Headers, secrets: Mapping[str, str]) -> dict[str, str]:
    """The headers to send, with the values of the secrets they name."""
    resolved = {}
    for name, value in declared.items():
        if isinstance(value, SecretHeader):
            if value.secret not in secrets:
                raise MissingSecret(
                    f"header {name}: the project has no secret named {value.secret!r}"
                )
            value = value.prefix + secrets[value.secret]
        resolved[name] = value
    return resolved


def _schema(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(parameters) if parameters else {"type": "object", "properties": {}}


class HttpTools:
    """The agent's HTTP tools, run with one guarded session."""

    def __init__(
        self,
        tools: Sequence[HttpTool],
        session: aiohttp.ClientSession,
        secret: str,
        *,
        allow_private: bool,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        self.tools = {t.name: t for t in tools}
        self.session = session
        self.secret = secret
        self.allow_private = allow_private
        self.secrets = secrets or {}

    def specs(self) -> list[ToolSpec]:
        return [ToolSpec(t.name, t.description, _schema(t.parameters)) for t in self.tools.values()]

    async def call(self, name: str, arguments: Any, message_id: str) -> ToolResult:
        tool = self.tools[name]
        started = time.perf_counter()
        try:
            output = await self._post(tool, arguments, message_id)
            result = ToolResult(output=output)
        except TimeoutError:
            result = ToolResult(error=f"the tool did not answer within {tool.timeout_seconds:g} s")
        except (PapayyaError, aiohttp.ClientError, ValueError) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, urlguard.RefusedAddress) else exc
            result = ToolResult(error=_short(cause))
        elapsed = (time.perf_counter() - started) * 1000
        return ToolResult(result.output, result.error, elapsed)

    async def _post(self, tool: HttpTool, arguments: Any, message_id: str) -> Any:
        await urlguard.check_url(tool.url, allow_private=self.allow_private)
        body = json.dumps(arguments).encode()
        # The signature's headers and the content type come last: a tool's own cannot
        # replace them.
        headers = resolve_headers(tool.headers, self.secrets)
        headers |= {"Content-Type": "application/json"} | signing.headers(
            self.secret, message_id, body
        )
        timeout = aiohttp.ClientTimeout(total=tool.timeout_seconds)
        async with self.session.post(tool.url, data=body, headers=headers, timeout=timeout) as r:
            content = b""
            while len(content) <= MAX_RESPONSE_BYTES and (chunk := await r.content.read(65536)):
                content += chunk
            if len(content) > MAX_RESPONSE_BYTES:
                raise ValueError(f"the tool's answer is larger than {MAX_RESPONSE_BYTES} bytes")
            if r.status >= 400:
                text = content[:500].decode(errors="replace")
                raise ValueError(f"the tool answered HTTP {r.status}: {text}")
            if r.content_type == "application/json":
                return json.loads(content)
            return content.decode(errors="replace")


@dataclass
class McpTools:
    """The tools of the agent's MCP servers, each reached over one session per attempt.

    Each session lives in a task of its own that enters and leaves its contexts: the SDK's
    anyio task groups must be left by the task that entered them, and a server that fails
    while connecting cancels only that task, never the loop's."""

    allow_private: bool
    secrets: Mapping[str, str] = field(default_factory=dict)
    _routes: dict[str, Any] = field(default_factory=dict)  # tool name -> its ClientSession
    _specs: list[ToolSpec] = field(default_factory=list)
    _holders: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def open(self, servers: Sequence[McpServer]) -> list[str]:
        """Connect and list; returns the problems (a server that is away offers no tools)."""
        problems = []
        for server in servers:
            ready: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()
            try:
                declared = server.headers or {}  # unset: no headers
                headers = resolve_headers(declared, self.secrets)
            except MissingSecret as exc:
                problems.append(f"MCP server {server.url}: {exc}")
                continue
            self._holders.append(asyncio.create_task(self._hold(server.url, headers, ready)))
            try:
                await urlguard.check_url(server.url, allow_private=self.allow_private)
                session, listed = await asyncio.wait_for(asyncio.shield(ready), MCP_TIMEOUT_SECONDS)
            except Exception as exc:  # any transport or protocol failure: no tools from it
                problems.append(f"MCP server {server.url}: {_short(exc)}")
                continue
            allowed = None if server.allowed_tools is None else set(server.allowed_tools)
            for tool in sorted(listed.tools, key=lambda t: t.name):
                if (allowed is not None and tool.name not in allowed) or tool.name in self._routes:
                    continue
                self._routes[tool.name] = session
                self._specs.append(
                    ToolSpec(tool.name, tool.description or "", _schema(tool.inputSchema))
                )
        return problems

    async def _hold(
        self, url: str, headers: dict[str, str], ready: asyncio.Future[tuple[Any, Any]]
    ) -> None:
        from mcp import ClientSession
        from mcp.client import streamable_http
        from mcp.shared._httpx_utils import create_mcp_http_client

        try:
            async with (
                create_mcp_http_client(headers=headers) as client,
                streamable_http.streamable_http_client(url, http_client=client) as (read, write, _),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                listed = await session.list_tools()
                if not ready.done():
                    ready.set_result((session, listed))
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(
                    exc if isinstance(exc, Exception) else RuntimeError("connection closed")
                )
            if isinstance(exc, Exception):
                return
            raise

    def specs(self) -> list[ToolSpec]:
        return list(self._specs)

    def __contains__(self, name: str) -> bool:
        return name in self._routes

    async def call(self, name: str, arguments: Any) -> ToolResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(MCP_TIMEOUT_SECONDS):
                answer = await self._routes[name].call_tool(name, arguments or {})
            texts = [getattr(c, "text", None) for c in answer.content]
            text = "\n".join(t for t in texts if t is not None)
            # Text as the server wrote it; structured content only when there is no text.
            output: Any = text if text or answer.structuredContent is None else (
                answer.structuredContent
            )  # fmt: skip
            result = ToolResult(error=text or "the tool failed") if answer.isError else (
                ToolResult(output=output)
            )  # fmt: skip
        except Exception as exc:  # the server went away, timed out, or broke the protocol
            result = ToolResult(error=_short(exc))
        elapsed = (time.perf_counter() - started) * 1000
        return ToolResult(result.output, result.error, elapsed)

    async def close(self) -> None:
        self._stop.set()
        if self._holders:
            done, pending = await asyncio.wait(self._holders, timeout=5)
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: a server's failure was reported already


def message_id(run_id: str, call_id: str | None, index: int) -> str:
    """The ``webhook-id`` of one tool call: the same on a repeat after a crash."""
    digest = hashlib.sha256(f"{run_id}\n{call_id}\n{index}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, PapayyaError):
        text = exc.message
    return text[:ERROR_CHARS]


def parse_http_tools(tools: Sequence[Any]) -> list[HttpTool]:
    """The HTTP tools among an agent's ``tools`` (the others are named code tools)."""
    return [msgspec.convert(t, HttpTool) for t in tools if isinstance(t, dict) and "url" in t]

"""A small client of the Papayya HTTP API: JSON calls, uploads and SSE following.

The one HTTP client layer of this package: the CLI uses it, and so do the published-SDK-shaped
resource clients (``papayya.api``), which bring their own error factory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import aiohttp
from yarl import URL

from papayya.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PapayyaError,
    PayloadTooLarge,
    Unauthorized,
)

_BY_STATUS: dict[int, type[PapayyaError]] = {
    400: InvalidInput,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
}


def error_from(status: int, body: Any) -> PapayyaError:
    message = f"HTTP {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = str(body["error"].get("message") or message)
    return _BY_STATUS.get(status, PapayyaError)(message)


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def error_of_answer(status: int, raw: bytes) -> Exception:
    """The default error factory: the ``papayya.errors`` class of the status."""
    return error_from(status, _json_or_none(raw))


# An error answer (status, body as sent) as the exception to raise.
ErrorFactory = Callable[[int, bytes], Exception]


class ApiClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        errors: ErrorFactory = error_of_answer,
        timeout: float | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"X-Api-Key": api_key} if api_key else {}
        self.errors = errors
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        # Without a timeout of its own, aiohttp's default (5 minutes in all).
        timeout = aiohttp.client.DEFAULT_TIMEOUT
        if self.timeout is not None:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
        self._session = aiohttp.ClientSession(headers=self.headers, timeout=timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use ApiClient as an async context manager"
        return self._session

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        form: aiohttp.FormData | None = None,
    ) -> Any:
        """The answer's JSON (``None`` if it has no body). ``form`` is sent as multipart
        instead of ``body`` as JSON."""
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        sent: dict[str, Any] = {"data": form} if form is not None else {"json": body}
        try:
            async with self.session.request(
                method, self.base_url + path, params=query, **sent
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise self.errors(resp.status, raw)
                return json.loads(raw) if raw else None
        except aiohttp.ClientConnectionError as exc:
            raise PapayyaError(f"cannot reach {self.base_url}: {exc}") from None

    async def listing(
        self, path: str, params: dict[str, Any] | None = None, most: int = 10_000
    ) -> list[Any]:
        """A list endpoint's items, page after page (each answer is a bare array, the next
        page is its ``Link: <…>; rel="next"`` header), up to ``most`` items."""
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        url: str | None = self.base_url + path
        items: list[Any] = []
        try:
            while url is not None and len(items) < most:
                async with self.session.get(url, params=query) as resp:
                    raw = await resp.read()
                    if resp.status >= 400:
                        raise self.errors(resp.status, raw)
                    items.extend(json.loads(raw))
                    link = resp.links.get("next")
                    url = None if link is None else str(resp.url.join(URL(str(link["url"]))))
                    query = {}  # the next page's address carries its query
        except aiohttp.ClientConnectionError as exc:
            raise PapayyaError(f"cannot reach {self.base_url}: {exc}") from None
        return items[:most]

    async def sse(
        self, path: str, last_event_id: str | None = None
    ) -> AsyncIterator[tuple[str, str | None, Any]]:
        """``(event, id, data)`` for each server-sent event until the server closes."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self.session.get(self.base_url + path, headers=headers, timeout=timeout) as resp:
            if resp.status >= 400:
                raise self.errors(resp.status, await resp.read())
            parser = SseParser()
            async for chunk in resp.content.iter_any():
                for item in parser.feed(chunk):
                    yield item


class SseParser:
    """``(event, id, data)`` of each event of a stream of this API, from its bytes fed in
    chunks of any size. Its data is JSON; a stream that is not UTF-8, holds data that is not
    JSON or a line longer than ``MAX_LINE`` raises ``PapayyaError`` ("malformed event stream")."""

    MAX_LINE: Final = 8 << 20

    def __init__(self) -> None:
        self._buffer = b""
        self._event: str = "message"
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str, str | None, Any]]:
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        if len(self._buffer) > self.MAX_LINE:
            raise PapayyaError(f"malformed event stream: a line over {self.MAX_LINE} bytes")
        events = []
        for raw in lines:
            try:
                line = raw.decode().rstrip("\r")
            except UnicodeDecodeError:
                raise PapayyaError("malformed event stream: not UTF-8") from None
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> tuple[str, str | None, Any] | None:
        if not line:
            found = None
            if self._data:
                try:
                    found = (self._event, self._id, json.loads("\n".join(self._data)))
                except (ValueError, RecursionError):
                    raise PapayyaError("malformed event stream: data is not JSON") from None
            self._event, self._id, self._data = "message", None, []
            return found
        if not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                self._event = value
            elif name == "id":
                self._id = value
            elif name == "data":
                self._data.append(value)
        return None

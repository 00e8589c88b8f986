"""Incremental server-sent-events splitting: raw blocks to pass on, parsed fields to read."""

from __future__ import annotations

import json
import re
from typing import Any, Final

_LINES: Final = re.compile(r"\r\n|\r|\n")


class SseEvent:
    __slots__ = ("data", "event", "raw")

    def __init__(self, raw: bytes, event: str | None, data: str) -> None:
        self.raw = raw
        self.event = event
        self.data = data

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            return None


class SseSplitter:
    """Feed bytes as they arrive; get back whole events, each with its exact raw bytes."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk
        events: list[SseEvent] = []
        while True:
            cut = _boundary(self._buffer)
            if cut is None:
                return events
            end, length = cut
            raw = self._buffer[: end + length]
            self._buffer = self._buffer[end + length :]
            events.append(_parse(raw))

    def flush(self) -> list[SseEvent]:
        rest, self._buffer = self._buffer, b""
        return [_parse(rest)] if rest.strip() else []


def _boundary(buffer: bytes) -> tuple[int, int] | None:
    found = [(buffer.find(sep), len(sep)) for sep in (b"\n\n", b"\r\n\r\n")]
    found = [f for f in found if f[0] >= 0]
    return min(found) if found else None


def _parse(raw: bytes) -> SseEvent:
    event = None
    data = []
    # Only CR, LF and CRLF end a line (str.splitlines would also cut at U+2028, U+0085, …,
    # which JSON text may hold as they are).
    for line in _LINES.split(raw.decode("utf-8", "replace")):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    return SseEvent(raw, event, "\n".join(data))

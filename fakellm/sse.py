"""Server-sent events, paced by the configured per-chunk latency."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web

from fakellm.config import Cut

# An event is (name, data): OpenAI chat sends no name, the Responses API and Anthropic do.
Event = tuple[str | None, Any]


def encode(name: str | None, data: Any) -> bytes:
    payload = data if isinstance(data, str) else msgspec.json.encode(data).decode()
    head = f"event: {name}\n" if name else ""
    # Text with line breaks is one data line per line, as the SSE format has it.
    lines = "".join(f"data: {line}\n" for line in re.split(r"\r\n|\r|\n", payload))
    return f"{head}{lines}\n".encode()


async def stream(
    request: web.Request,
    events: Iterable[Event],
    per_chunk: float,
    interruption: tuple[int, Event] | None = None,
    cut: Cut | None = None,
) -> web.StreamResponse:
    """Send ``events``; with ``interruption`` (n, error event), only n of them, then the error;
    with ``cut``, only ``cut.after_events`` of them, then nothing (see ``config.Cut``)."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        for i, event in enumerate(events):
            if i and per_chunk > 0:
                await asyncio.sleep(per_chunk)
            if interruption is not None and i == interruption[0]:
                await response.write(encode(*interruption[1]))
                break
            if cut is not None and i == cut.after_events:
                await _cut_off(request, cut)
                break
            await response.write(encode(*event))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client hung up mid-stream, as clients may
    return response


async def _cut_off(request: web.Request, cut: Cut) -> None:
    if cut.how == "reset" and request.transport is not None:
        request.transport.abort()  # the connection drops: no end of the chunked body
        raise ConnectionResetError("cut: reset")
    if cut.how == "stall":
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(0.05)  # until the client gives up
        raise ConnectionResetError("cut: stalled until the client hung up")


def words(text: str) -> list[str]:
    """``text`` cut after each run of spaces, as streamed text deltas usually are."""
    return re.findall(r"\S+\s*|\s+", text)


def slices(text: str, size: int = 8) -> list[str]:
    """``text`` in pieces of ``size`` characters (tool-call arguments stream like this)."""
    return [text[i : i + size] for i in range(0, len(text), size)]

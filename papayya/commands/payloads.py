"""Bulky values (task results, outputs, tool input and output, checkpoint snapshots) are kept
in the store's payloads table and referenced from the event, so event rows stay small."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from eventstore.protocol import EventStore
from papayya.wire import INLINE_RESULT_BYTES

_encoder = msgspec.json.Encoder()


async def stash(store: EventStore, value: Any) -> tuple[Any, str | None]:
    """``(value, None)`` if small, else ``(None, ref)`` with the JSON in the payloads table."""
    raw = _encoder.encode(value)
    if len(raw) <= INLINE_RESULT_BYTES:
        return value, None
    return None, await store.put_payload(raw, "application/json")


async def stash_raw(store: EventStore, raw: bytes) -> tuple[Any, str | None]:
    """``stash`` of a value already encoded as JSON."""
    if len(raw) <= INLINE_RESULT_BYTES:
        return msgspec.json.decode(raw), None
    return None, await store.put_payload(raw, "application/json")


async def resolve(store: EventStore, refs: set[str]) -> dict[str, Any]:
    """The values of payload references, decoded."""
    ordered = list(refs)
    found = await asyncio.gather(*(store.get_payload(ref) for ref in ordered))
    return {ref: msgspec.json.decode(raw) for ref, raw in zip(ordered, found, strict=True)}

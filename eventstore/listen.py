"""A LISTEN that outlives its connection: Postgres notices for one channel, reconnecting.

The event store's tailer and the API's revoked-key watch both follow a channel this way. A
notice can be lost while the connection is down, so each (re)connection calls ``connected``,
for the caller to catch up on what it may have missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.1
MAX_BACKOFF = 2.0


async def listen_forever(
    dsn: str,
    channel: str,
    notified: Callable[[str], None],
    connected: Callable[[asyncpg.Connection], Awaitable[None]],
    *,
    server_settings: Mapping[str, str] | None = None,
) -> None:
    """Call ``notified(payload)`` for each notice on ``channel`` until cancelled. A lost
    connection is reopened after a backoff (0.1 s, doubling to 2 s), then ``connected(conn)``
    runs."""
    backoff = FIRST_BACKOFF
    while True:
        lost = asyncio.Event()
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(dsn, server_settings=dict(server_settings or {}))
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())

            def notice(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
                notified(str(payload))

            await conn.add_listener(channel, notice)
            backoff = FIRST_BACKOFF
            await connected(conn)
            await lost.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("LISTEN %s: connection failed: %s", channel, exc)
        finally:
            if conn is not None:
                conn.terminate()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF)

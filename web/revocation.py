"""Revoked keys end their streams: a long-lived response (the SSE streams) ends within a
second of the revocation of the API key it was opened with, in every server process.

A revocation commits with a ``NOTIFY`` on ``CHANNEL`` (``Projects.revoke_key``), which each
process's ``KeyWatch`` listens to on a connection of its own. Notifications are lost while
that connection is down, so the watch also asks the database every ``RECHECK_SECONDS``
whether a key with open streams was revoked (one query, only while streams are open).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Final

import asyncpg
from aiohttp import web

from eventstore.listen import listen_forever
from papayya.readmodels.projects import Projects
from projections.lru import Lru

log = logging.getLogger(__name__)

CHANNEL: Final = "papayya_key_revoked"
RECHECK_SECONDS: Final = 2.0
# Revocations remembered, so that a stream opened just after one (its request authenticated
# just before) still ends.
REMEMBERED: Final = 10_000


class KeyWatch:
    """The open streams of each API key, ended when the key is revoked."""

    def __init__(self, projects: Projects, dsn: str | None) -> None:
        self._projects = projects
        self._dsn = dsn
        self._streams: dict[str, set[asyncio.Event]] = {}
        self._revoked: Lru[str, bool] = Lru(REMEMBERED)

    def watch(self, key_id: str) -> asyncio.Event:
        """An event set when ``key_id`` is revoked; ``unwatch`` it when the stream ends."""
        revoked = asyncio.Event()
        if self._revoked.get(key_id):
            revoked.set()
        self._streams.setdefault(key_id, set()).add(revoked)
        return revoked

    def unwatch(self, key_id: str, revoked: asyncio.Event) -> None:
        streams = self._streams.get(key_id)
        if streams is not None:
            streams.discard(revoked)
            if not streams:
                del self._streams[key_id]

    def watching(self, key_id: str) -> int:
        """How many streams of ``key_id`` are open in this process."""
        return len(self._streams.get(key_id, ()))

    def revoke(self, key_id: str) -> None:
        """End every stream of ``key_id`` in this process."""
        self._revoked.put(key_id, True)
        for revoked in self._streams.get(key_id, ()):
            revoked.set()

    async def recheck(self) -> None:
        watched = list(self._streams)
        if watched:
            for key_id in await self._projects.revoked(watched):
                self.revoke(key_id)

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="key-revocations")
        try:
            while True:
                await asyncio.sleep(RECHECK_SECONDS)
                try:
                    await self.recheck()
                except (OSError, asyncpg.PostgresError) as exc:
                    log.debug("revoked keys re-check failed: %s", exc)
        finally:
            listener.cancel()
            await asyncio.wait({listener})

    async def _listen(self) -> None:
        if self._dsn is None:
            return

        async def connected(_conn: asyncpg.Connection) -> None:
            await self.recheck()  # anything revoked while we were not listening

        await listen_forever(self._dsn, CHANNEL, self.revoke, connected)


async def key_watch_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: this process's ``KeyWatch`` (needs the store: after it)."""
    from web import keys

    watch = KeyWatch(app[keys.PROJECTS], app[keys.DSN])
    app[keys.KEY_WATCH] = watch
    task = asyncio.create_task(watch.run(), name="key-watch")
    yield
    task.cancel()
    await asyncio.wait({task})

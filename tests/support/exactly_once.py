"""Helpers of the exactly-once tests: a TCP proxy that plays a Postgres restart, a run started
as a worker starts one, and waits on a run's events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from eventstore.types import encode_summary
from papayya import runtokens
from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.runs import Runs, run_stream, run_summary
from tests.support.cloud import Cloud
from web import keys

# One model call, then the agent returns its answer; no SDK retries of its own.
ONE_CALL = """
from openai import OpenAI
from papayya import agent

@agent
def once(task):
    client = OpenAI(max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": str(task)}])
    return answer.choices[0].message.content
"""


@dataclass
class Proxy:
    """Forwards TCP to ``target``; ``cut()`` drops every connection and refuses new ones, as a
    restarting server does, until ``restore()``."""

    target: tuple[str, int]
    port: int = 0
    up: bool = True
    # The next this many answers from the target are lost: the connection drops instead.
    lose_answers: int = 0
    _links: set[asyncio.StreamWriter] = field(default_factory=set)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answers: bool = False
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if answers and self.lose_answers > 0:
                    self.lose_answers -= 1
                    writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_writer}
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer, answers=True)
            )
        finally:
            self._links -= {writer, up_writer}

    def cut(self) -> None:
        self.up = False
        for link in list(self._links):
            link.transport.abort()

    def restore(self) -> None:
        self.up = True


@asynccontextmanager
async def proxy_to(host: str, port: int) -> AsyncIterator[Proxy]:
    proxy = Proxy((host, port))
    server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        proxy.cut()
        server.close()


@asynccontextmanager
async def proxied(dsn: str) -> AsyncIterator[tuple[Proxy, str]]:
    """A proxy in front of ``dsn``'s server and the DSN that goes through it."""
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0] + "@" if len(netloc) == 2 else ""
    async with proxy_to(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        yield proxy, urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


@asynccontextmanager
async def recovering(cloud: Cloud, run_id: str) -> AsyncIterator[None]:
    """The run's first attempt lost and its second started, in a transaction that commits
    when the block ends: until then, every other append to the run waits for it."""
    store = cloud.app[keys.STORE]
    state = await cloud.runs.load(run_id)
    at = datetime.now(UTC)
    events = [ev.AttemptLost(attempt=1, reason="agent_exit_137", at=at),
              ev.RunStarted(attempt=2, worker="test", at=at)]  # fmt: skip
    after = fold(events, state)
    async with store.pool.acquire() as conn, conn.transaction():
        stream = run_stream(run_id)
        await store.append_on(conn, stream, [ev.to_new_event(e) for e in events], state.version)
        await conn.execute(
            "UPDATE stream_summaries SET version = $2, summary = $3::jsonb WHERE stream_id = $1",
            stream, after.version, encode_summary(run_summary(after)),
        )  # fmt: skip
        yield
    store.committed()


async def wait_blocked(cloud: Cloud, timeout: float = 30) -> None:
    """Until some statement of the test's database waits for a lock."""
    pool = cloud.app[keys.STORE].pool
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ):
        if loop.time() > deadline:
            raise AssertionError("no append waited for the recovery")
        await asyncio.sleep(0.02)


async def start_attempt(cloud: Cloud, slug: str, **options: Any) -> tuple[str, str]:
    """A run of ``slug`` in its first attempt, started as a worker would (no agent runs), and
    that attempt's run token."""
    run_id = await cloud.start(slug, **options)
    runs: Runs = cloud.runs
    state = await runs.load(run_id)
    await runs.append(state, [ev.RunStarted(attempt=1, worker="test")])
    return run_id, runtokens.mint(cloud.app[keys.RUN_TOKEN_SECRET], run_id, 1)


async def wait_event(
    runs: Runs, run_id: str, kind: type[ev.RunEvent], timeout: float = 30
) -> list[ev.RunEvent]:
    """The run's events once one of type ``kind`` is among them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        events = await runs.events(run_id)
        if any(isinstance(e, kind) for e in events):
            return events
        if loop.time() > deadline:
            raise AssertionError(f"no {kind.__name__} in run {run_id} after {timeout}s")
        await asyncio.sleep(0.05)


def live_calls(events: list[ev.RunEvent]) -> list[ev.LlmCallRecorded]:
    return [e for e in events if isinstance(e, ev.LlmCallRecorded) and not e.replayed]


def provider_calls(cloud: Cloud) -> int:
    """Chat completions the fake provider answered (failures it injected left out)."""
    return sum(1 for r in cloud.fake.stats.requests if r.status == 200)

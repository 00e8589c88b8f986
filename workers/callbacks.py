"""Callbacks (DESIGN §8): on every terminal status, POST the run's summary to its
``callback_url``, signed like webhooks, retried with exponential backoff.

Two halves: a projector writes a delivery row per terminal event in the transaction of its
checkpoint (so each is owed exactly once, whatever crashes), and ``Deliverer`` sends the due
ones. Every attempt is a ``CallbackAttempted`` event on the run. Several deliverers may run:
a delivery is claimed with ``FOR UPDATE SKIP LOCKED`` and held while it is attempted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import ClassVar, Final

import aiohttp
import asyncpg
import msgspec

from eventstore.postgres import PostgresEventStore
from papayya import signing
from papayya.domain import events as ev
from papayya.errors import InvalidInput
from papayya.models import run_out
from papayya.runs import Runs
from projections.projector import Envelope, Projector
from sql import queries
from workers import urlguard

log = logging.getLogger(__name__)

Q: Final = queries("workers.sql")
SECRET_NAME: Final = "callbacks"
TERMINAL: Final = (ev.RunCompleted, ev.RunFailed, ev.RunCancelled, ev.BudgetExceeded)
RETRIES: Final = 3
TIMEOUT_SECONDS: Final = 10.0
ERROR_TEXT: Final = 500


class CallbackOutbox(Projector):
    name: ClassVar[str] = "callbacks"
    categories: ClassVar[frozenset[str]] = frozenset({"run"})
    tables: ClassVar[tuple[str, ...]] = ()

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        for envelope in batch:
            if isinstance(envelope.event, TERMINAL):
                recorded = envelope.recorded
                webhook_id = f"msg_{recorded.event_id.hex}"
                await conn.execute(Q["owe_callback"], webhook_id, recorded.stream_id)


async def project_secret(pool: asyncpg.Pool, project_id: str, rotate: bool = False) -> str:
    """The project's callback signing secret (``whsec_…``), made on first use."""
    if rotate:
        fresh = signing.new_secret()
        await pool.execute(Q["replace_project_secret"], project_id, SECRET_NAME, fresh.encode())
        return fresh
    value = await pool.fetchval(Q["project_secret"], project_id, SECRET_NAME)
    if value is None:
        await pool.execute(
            Q["create_project_secret"], project_id, SECRET_NAME, signing.new_secret().encode()
        )
        value = await pool.fetchval(Q["project_secret"], project_id, SECRET_NAME)
    return bytes(value).decode()


class Deliverer:
    def __init__(
        self,
        store: PostgresEventStore,
        *,
        backoff_seconds: float = 1.0,
        retries: int = RETRIES,
        poll_interval: float = 0.5,
        timeout: float = TIMEOUT_SECONDS,
        allow_private: bool = False,
    ) -> None:
        self.store = store
        self.runs = Runs(store)
        self.backoff_seconds = backoff_seconds
        self.retries = retries
        self.poll_interval = poll_interval
        self.timeout = timeout
        # Whether callbacks may go to private, loopback and link-local addresses (urlguard).
        self.allow_private = allow_private
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with urlguard.session(timeout, allow_private=self.allow_private) as session:
            while not self._stopping.is_set():
                try:
                    sent = await self.deliver_due(session)
                except Exception as exc:
                    log.warning("callbacks: %s", exc)
                    sent = 0
                if not sent:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.poll_interval)

    async def deliver_due(self, session: aiohttp.ClientSession) -> int:
        rows = await self.store.pool.fetch(Q["claim_callbacks"], 20, self.timeout + 5)
        await asyncio.gather(*(self._deliver(session, row) for row in rows))
        return len(rows)

    async def _deliver(self, session: aiohttp.ClientSession, row: asyncpg.Record) -> None:
        webhook_id, run_id, attempt = row["webhook_id"], row["run_id"], row["attempts"]
        state = await self.runs.load(run_id)
        body = msgspec.json.encode(run_out(state))
        secret = await project_secret(self.store.pool, row["project_id"])
        status: int | None = None
        error: str | None = None
        refused = False  # a refused address is final: retrying cannot make it allowed
        try:
            # Checked again at every delivery: the name may resolve elsewhere by now.
            await urlguard.check_url(row["url"], allow_private=self.allow_private)
            async with session.post(
                row["url"],
                data=body,
                headers={"Content-Type": "application/json"}
                | signing.headers(secret, webhook_id, body),
                # A redirect would lead the POST to a URL that was never checked.
                allow_redirects=False,
            ) as response:
                status = response.status
                if not 200 <= status < 300:
                    error = f"HTTP {status}: {(await response.text())[:ERROR_TEXT]}"
        except InvalidInput as exc:  # UnsafeCallbackUrl, or a URL without a host
            error, refused = f"refused: {exc}"[:ERROR_TEXT], True
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            cause = getattr(exc, "os_error", None)  # the connect's resolver refused it
            refused = isinstance(cause, urlguard.RefusedAddress)
            error = f"refused: {cause}" if refused else f"{type(exc).__name__}: {exc}"
            error = error[:ERROR_TEXT] or "request failed"
        delivered = error is None
        final = delivered or refused or attempt > self.retries
        event = ev.CallbackAttempted(
            url=row["url"], attempt=attempt, delivered=delivered, status_code=status,
            error=error, webhook_id=webhook_id, final=final,
        )  # fmt: skip
        await self.runs.append_fresh(state, lambda _state: [event])
        if delivered:
            await self.store.pool.execute(Q["callback_delivered"], webhook_id)
        elif final:
            await self.store.pool.execute(Q["callback_gave_up"], webhook_id, error)
        else:
            delay = self.backoff_seconds * 2 ** (attempt - 1)
            await self.store.pool.execute(Q["callback_retry"], webhook_id, delay, error)

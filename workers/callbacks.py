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
from papayya import signing, urlguard
from papayya.domain import events as ev
from papayya.errors import InvalidInput
from papayya.models import run_out
from papayya.readmodels import callbacks
from papayya.readmodels.callbacks import Callbacks, Delivery
from papayya.readmodels.secrets import Secrets
from papayya.runs import Runs
from projections.projector import Envelope, Projector

log = logging.getLogger(__name__)

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
                await callbacks.owe(conn, webhook_id, recorded.stream_id)


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
        self.callbacks = Callbacks(store)
        self.secrets = Secrets(store)
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
        due = await self.callbacks.claim(20, self.timeout + 5)
        await asyncio.gather(*(self._deliver(session, delivery) for delivery in due))
        return len(due)

    async def _deliver(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        webhook_id, url, attempt = delivery.webhook_id, delivery.url, delivery.attempts
        state = await self.runs.load(delivery.run_id)
        body = msgspec.json.encode(run_out(state))
        secret = await self.secrets.callbacks(delivery.project_id)
        status: int | None = None
        error: str | None = None
        refused = False  # a refused address is final: retrying cannot make it allowed
        try:
            # Checked again at every delivery: the name may resolve elsewhere by now.
            await urlguard.check_url(url, allow_private=self.allow_private)
            async with session.post(
                url,
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
            url=url, attempt=attempt, delivered=delivered, status_code=status,
            error=error, webhook_id=webhook_id, final=final,
        )  # fmt: skip
        await self.runs.append_fresh(state, lambda _state: [event])
        if delivered:
            await self.callbacks.delivered(webhook_id)
        elif final:
            await self.callbacks.gave_up(webhook_id, error)
        else:
            delay = self.backoff_seconds * 2 ** (attempt - 1)
            await self.callbacks.retry(webhook_id, delay, error)

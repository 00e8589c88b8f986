"""Real ``papayya`` processes as an operator runs them: start a server, wait until it is
ready, stop it by a signal, and find what processes a data directory left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

READY_SECONDS = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def work_dir() -> Iterator[Path]:
    """A directory for data dirs that the embedded Postgres's own user (``pgserver``, when
    tests run as root) can enter: pytest's ``tmp_path`` root is made 0700 again by every
    pytest that starts meanwhile. Short, too, for the Unix sockets under it."""
    path = Path(tempfile.mkdtemp(prefix="pp-op-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def bare_env(**settings: str) -> dict[str, str]:
    """The test process's environment without any Papayya or provider setting, plus these."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAPAYYA_", "OPENAI_", "ANTHROPIC_"))
    }
    return env | settings


def local_server_env(dsn: str, redis_url: str, data_dir: Path, key: str) -> dict[str, str]:
    """A one-machine server's settings on the test's Postgres and Redis: its own queue and
    data directory, the first project's key, and agents as local processes."""
    return bare_env(
        PAPAYYA_DATABASE_URL=dsn, PAPAYYA_REDIS_URL=redis_url,
        PAPAYYA_QUEUE_NAME=f"papayya:test:{uuid.uuid4().hex}",
        PAPAYYA_DATA_DIR=str(data_dir), PAPAYYA_BOOTSTRAP_API_KEY=key,
        PAPAYYA_PROCESS_RUNTIME="all",
    )  # fmt: skip


def papayya(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``papayya ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@dataclass
class ServerProcess:
    """A ``papayya server`` process, its output in ``log``."""

    port: int
    env: dict[str, str]
    log: Path
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "server", "--port", str(self.port),
                 *self.args],
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    async def ready(self) -> None:
        """Wait until ``/readyz`` answers 200 (failing at once if the process ends)."""
        assert self.process is not None
        async with aiohttp.ClientSession() as http, asyncio.timeout(READY_SECONDS):
            while True:
                assert self.process.poll() is None, self.log.read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = 90) -> int:
        """Send ``signum`` and wait for the exit; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return await asyncio.to_thread(self.process.wait, timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def processes_of(data_dir: Path) -> list[tuple[int, str]]:
    """Live processes that belong to ``data_dir``, seen in ``/proc``: those whose command
    line names it (Postgres: ``-D <dir>``; Redis: its socket) or that run inside it (Redis
    moves into its directory). Zombies are gone already."""
    mark = str(data_dir.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                cwd = ""
        except OSError:  # it ended while we looked
            continue
        if mark in cmdline or cwd == mark or cwd.startswith(mark + "/"):
            found.append((int(entry.name), cmdline.strip()))
    return found


def pid_in(path: Path) -> int:
    """The pid on the first line of a pid file."""
    return int(path.read_text().split("\n", 1)[0])


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"

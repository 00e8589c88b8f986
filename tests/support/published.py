"""The published SDK (``papayya`` from the package index), as its users run it against us.

It is installed from the index into a venv of its own, never vendored, so the tests hold our
server to the code users actually have. The venv is cached under a stable directory (built
once per machine, reused by every rerun) and guarded by a file lock, since several pytest
processes may ask for it at once. Scripts run in it as subprocesses: the server under test
lives in the test's event loop, so they are awaited, never run blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PUBLISHED_VERSION = "0.2.0"
REPO = Path(__file__).resolve().parents[2]
# One venv per version, so a version bump builds a fresh one beside the old.
CACHE_ROOT = Path(
    os.environ.get("PAPAYYA_PUBLISHED_SDK_CACHE", REPO / ".papayya" / "published-sdk")
)


def published_venv(version: str = PUBLISHED_VERSION) -> Path:
    """The venv holding ``papayya==version``, built from the index on first use."""
    venv = CACHE_ROOT / version
    ready = venv / ".installed"
    if ready.exists():
        return venv
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / f".{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", f"papayya=={version}"],
                check=True,
            )
            ready.write_text(version)
    return venv


def our_venv() -> Path:
    """The venv running the tests, where our package is installed: the same scripts run in it
    hold our ``papayya`` (``Papayya``, ``Client``, ``papayya.api``) to the published one."""
    return Path(sys.prefix)


@dataclass(frozen=True)
class Published:
    """Runs code and the CLI of the published SDK against one server, as one user.

    ``home`` is the user's home (the SDK and CLI read ``~/.papayya``); the lineage journal
    lives there too, so each test has its own."""

    venv: Path
    url: str
    key: str
    home: Path

    @property
    def journal(self) -> Path:
        return self.home / "lineage-journal.jsonl"

    def env(self, **extra: str) -> dict[str, str]:
        # Our package is imported from this checkout, installed or not; the published one
        # only from its venv.
        mine = {"PYTHONPATH": str(REPO)} if self.venv == our_venv() else {}
        env = mine | {
            "PATH": f"{self.venv / 'bin'}:{os.environ.get('PATH', '')}",
            "HOME": str(self.home),
            "PAPAYYA_API_KEY": self.key,
            "PAPAYYA_BASE_URL": self.url,
            "PAPAYYA_LINEAGE_JOURNAL_PATH": str(self.journal),
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
        return {**env, **extra}

    async def script(self, code: str, **env: str) -> Any:
        """Run ``code`` in the published SDK's interpreter; it prints its answer as JSON on
        its last line, which is returned. A failing script fails the test with its stderr."""
        proc = await asyncio.create_subprocess_exec(
            str(self.venv / "bin" / "python"),
            "-c",
            code,
            env=self.env(**env),
            cwd=self.home,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, f"script failed ({proc.returncode}):\n{err.decode()}"
        lines = out.decode().strip().splitlines()
        return json.loads(lines[-1]) if lines else None

    async def cli(self, *args: str, **env: str) -> tuple[int, str, str]:
        """The published ``papayya`` command: its exit code, its output and its errors."""
        proc = await asyncio.create_subprocess_exec(
            str(self.venv / "bin" / "papayya"),
            *args,
            env=self.env(**env),
            cwd=self.home,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()


class Interactive:
    """A published-SDK script that the test steps through: it prints a line at each point
    where it waits, and reads a line from stdin to go on (so the test can cut the network
    in between)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def until(self, marker: str) -> list[str]:
        """Lines printed up to and including ``marker``."""
        assert self.proc.stdout is not None
        seen: list[str] = []
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                err = await self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"script ended before {marker!r}: {seen}\n{err.decode()}")
            line = raw.decode().rstrip("\n")
            seen.append(line)
            if line == marker:
                return seen

    async def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()

    async def finish(self) -> Any:
        out, err = await self.proc.communicate()
        assert self.proc.returncode == 0, err.decode()
        lines = out.decode().strip().splitlines()
        return json.loads(lines[-1]) if lines else None


@contextlib.asynccontextmanager
async def interactive(published: Published, code: str) -> AsyncIterator[Interactive]:
    proc = await asyncio.create_subprocess_exec(
        str(published.venv / "bin" / "python"),
        "-u",
        "-c",
        code,
        env=published.env(),
        cwd=published.home,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Interactive(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


class Outage:
    """A TCP relay in front of the server that can be cut and restored on the same port.

    Cut, it stops listening, so clients get "connection refused", as from a server that is
    down; restored, it listens again and relays to the same upstream."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._links):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links -= {writer, up_writer}


@contextlib.asynccontextmanager
async def outage_relay(url: str) -> AsyncIterator[Outage]:
    host, port = url.removeprefix("http://").split(":")
    relay = Outage(host, int(port))
    await relay.restore()
    try:
        yield relay
    finally:
        if relay._server is not None:
            await relay.cut()

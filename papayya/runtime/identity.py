"""Become the agent's uid: used by the fork server that a root worker starts, before it loads
anything of the agent's. Standard library only (Linux).

First the process leaves the host's network (``papayya.runtime.netns``): the agent reaches the
control plane through its Unix socket only, and no database or Redis socket.

A uid other than root may not be able to reach what the agent needs: the interpreter, its
standard library and site-packages, the agent's module, its scratch directory. On this kind
of machine Python often lives under ``/root`` (mode 0700). So, while still root, the process
enters a mount namespace of its own and lays a tmpfs (mode 0711) over each directory that
would stop the agent, with only the entries it needs bound back in: the agent reaches what it
needs and sees nothing else of that directory. The rest of the filesystem keeps its own
permissions, now checked against the agent's uid, with no supplementary groups.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MAX_ROUNDS = 8


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    _check(
        _libc().mount(
            None if source is None else os.fsencode(source),
            os.fsencode(target),
            None if fstype is None else fstype.encode(),
            flags,
            None if data is None else data.encode(),
        ),
        f"mount {target}",
    )


def _passable(info: os.stat_result, uid: int) -> bool:
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == uid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def blockers(paths: Iterable[str], uid: int) -> dict[str, set[str]]:
    """For each path, the first directory on the way that ``uid`` may not pass, with the
    entry below it that the path goes through."""
    found: dict[str, set[str]] = {}
    for path in paths:
        parts = Path(path).parts
        for depth in range(1, len(parts)):
            directory = os.path.join(*parts[:depth])
            try:
                info = os.stat(directory)
            except OSError:
                break
            if not _passable(info, uid):
                found.setdefault(directory, set()).add(parts[depth])
                break
    return found


def _cover(directory: str, entries: set[str]) -> None:
    """A tmpfs over ``directory`` holding only ``entries``, bound from the originals."""
    held: dict[str, int] = {}
    for entry in entries:
        try:
            held[entry] = os.open(os.path.join(directory, entry), os.O_PATH)
        except OSError:
            continue
    try:
        _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0711,size=64k")
        for entry, fd in held.items():
            target = os.path.join(directory, entry)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.mkdir(target)
            else:
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
            _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC, None)
    finally:
        for fd in held.values():
            os.close(fd)


def needed_paths(extra: Iterable[str]) -> list[str]:
    """The interpreter, its library and every import path, and ``extra``, resolved."""
    candidates = [sys.executable, sys.base_prefix, sys.prefix, os.path.dirname(os.__file__)]
    candidates += [p for p in sys.path if p]
    candidates += [p for p in extra if p]
    resolved = []
    for path in candidates:
        real = os.path.realpath(os.path.abspath(path))
        if os.path.exists(real) and real not in resolved:
            resolved.append(real)
    return resolved


def private_mounts() -> None:
    """Enter a mount namespace of this process's own, whose changes reach no other."""
    _check(_libc().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing leaks back to the host


def expose(paths: list[str], uid: int) -> None:
    """Make ``paths`` reachable by ``uid``; in a mount namespace of this process's own
    (``private_mounts``), if any directory is in the way."""
    for _ in range(MAX_ROUNDS):  # a covered directory's entries may hold blockers of their own
        found = blockers(paths, uid)
        if not found:
            return
        for directory in sorted(found):
            _cover(directory, found[directory])
    raise OSError(f"could not make {', '.join(paths)} reachable by uid {uid}")


def become(uid: int, extra: Iterable[str] = (), data_dirs: Iterable[str] = ()) -> None:
    """Drop from root to ``uid`` (group ``uid``, no other groups) with what the agent needs
    still in reach, and no network but loopback and the sockets of ``extra`` (those under
    ``data_dirs`` hidden, as ``netns.leave_network`` says). Raises ``OSError`` if any step
    fails: the caller must then stop."""
    # Imported here: netns builds on this module's mount helpers.
    from papayya.runtime.netns import leave_network

    paths = needed_paths(extra)
    try:
        private_mounts()
        leave_network(paths, data_dirs)
    except OSError as exc:
        raise OSError(
            f"agents run as uid {uid} in a network namespace of their own, but this process "
            f"could not make one ({exc}): give the worker CAP_SYS_ADMIN, or run it as a user "
            f"other than root"
        ) from None
    try:
        expose(paths, uid)
    except OSError as exc:
        missing = sorted(blockers(paths, uid)) or paths
        raise OSError(
            f"agents run as uid {uid} but cannot pass {', '.join(missing)} and this process "
            f"may not mount over them ({exc}): put Python and the agent where other users "
            f"may read them, or run the worker as a user other than root"
        ) from None
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgroups():
        raise OSError(f"could not become uid {uid}")
    python = os.path.realpath(sys.executable)
    if not os.access(python, os.X_OK) or not os.access(os.path.dirname(os.__file__), os.R_OK):
        raise OSError(f"uid {uid} cannot run {python}")

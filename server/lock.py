"""One ``papayya server`` per data directory.

A second server on the same data directory would share the embedded Postgres and Redis of
the first and, on its way out, stop them under it. So the server takes an exclusive
``flock`` on ``<data dir>/server.lock`` before it touches anything else, and holds it for
its whole life; the kernel releases it when the process ends, however it ends (SIGKILL
included), so a stale lock never blocks a restart. The file holds the holder's pid, for
the message the next one prints.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_FILE = "server.lock"


class DataDirInUse(Exception):
    """Another server holds this data directory."""


def hold(data_dir: Path) -> IO[str]:
    """Lock ``data_dir`` for this process; keep the returned file open as long as it runs.
    The descriptor is not inherited by the programs we start (Python opens files
    close-on-exec), so an orphaned backend cannot keep the lock."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / LOCK_FILE, "a+")  # held until the process ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise DataDirInUse(
            f"another papayya server (pid {holder}) is using the data directory "
            f"{data_dir.resolve()}: stop it first, or give this one a PAPAYYA_DATA_DIR of "
            "its own"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle

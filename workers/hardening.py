"""What a server process does to itself so that the agents a worker starts as local processes
(the ``process`` runtime) cannot read what it holds (docs/security.md).

- ``drop_secrets``: once started, the process has read its secrets into its configuration
  (the database and Redis URLs into ``Config``, the provider keys into the gateway's
  upstreams, the bootstrap key into the database as a hash, S3 credentials into the blob
  store's session). It then removes them from its environment, and overwrites them in the
  memory ``/proc/<pid>/environ`` shows, which ``os.environ`` alone does not change.
- ``make_non_dumpable``: ``PR_SET_DUMPABLE`` 0, so another process of the same uid can read
  neither its ``/proc/<pid>/{environ,mem,maps,…}`` nor attach to it.
- ``agent_uid``: a worker that runs as root starts agents as another uid, one per project,
  so that they cannot read the server's files or signal each other's processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
from collections.abc import Iterable, MutableMapping
from typing import Final

log = logging.getLogger(__name__)

# Read at start-up and needed no more (papayya.config, web.gateway, web.app, papayya.blobstore).
# Not dropped: what is read later and is no secret (PAPAYYA_*_SECONDS, PAPAYYA_BASE_URL,
# DOCKER_HOST, PIP_INDEX_URL for the image builder's pip), and PAPAYYA_AGENT_ENV's variables,
# which the operator passes to agents on purpose.
SECRETS: Final = (
    "PAPAYYA_BOOTSTRAP_API_KEY",
    "PAPAYYA_DATABASE_URL",
    "PAPAYYA_REDIS_URL",
    "PAPAYYA_OPENAI_API_KEY",
    "PAPAYYA_ANTHROPIC_API_KEY",
    "PAPAYYA_API_KEY",  # the CLI's key, should the server's shell hold one
    "PAPAYYA_METRICS_TOKEN",  # read into Config at start-up
    "PAPAYYA_SECRETS_KEY",  # read into Config at start-up: seals project secrets
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "PGPASSWORD",
)
PR_SET_DUMPABLE: Final = 4
# Agents of project p run as uid = gid = AGENT_UID_BASE + hash(p) mod AGENT_UIDS: a range no
# distribution gives to users, below 2**31 for tools that keep uids in a signed int.
AGENT_UID_BASE: Final = 1_600_000_000
AGENT_UIDS: Final = 1 << 24


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _wipe_c_environ(names: set[bytes]) -> None:
    """Overwrite the values of ``names`` in the C environment in place (their lengths kept)."""
    environ = ctypes.POINTER(ctypes.c_void_p).in_dll(_libc(), "environ")
    index = 0
    while (address := environ[index]) is not None:
        entry = ctypes.string_at(address)
        name, sep, value = entry.partition(b"=")
        if sep and name in names and value:
            ctypes.memset(address + len(name) + 1, 0, len(value))
        index += 1


def drop_secrets(
    environ: MutableMapping[str, str] | None = None, names: Iterable[str] = SECRETS
) -> list[str]:
    """Remove ``names`` from this process's environment (and wipe their values where
    ``/proc/<pid>/environ`` would show them); the names that were there."""
    env = os.environ if environ is None else environ
    found = [name for name in names if name in env]
    if env is os.environ and found:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            _wipe_c_environ({os.fsencode(name) for name in found})
    for name in found:
        env.pop(name, None)
    return found


def make_non_dumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``; whether it took (Linux only)."""
    try:
        return int(_libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def harden(what: str) -> None:
    """Both of the above, with a line in the log saying what was done."""
    dropped = drop_secrets()
    dumpable = "not dumpable" if make_non_dumpable() else "dumpable (prctl unavailable)"
    log.info(
        "%s: dropped %s from the environment; %s",
        what, ", ".join(dropped) or "no secrets", dumpable,
    )  # fmt: skip


def agent_uid(project_id: str) -> int | None:
    """The uid a root worker gives the project's agents; ``None`` when not root (agents then
    run as the worker's own uid, kept out of its memory by ``make_non_dumpable``)."""
    if os.geteuid() != 0:
        return None
    digest = hashlib.sha256(project_id.encode()).digest()
    return AGENT_UID_BASE + int.from_bytes(digest[:8], "big") % AGENT_UIDS

"""The ``process`` runtime's fork server: ``python -m papayya.runtime.forkserver``.

One per deployment, started by the worker with the agent module in ``PAPAYYA_AGENT_MODULE``.
It imports what the module imports (parsed from its source, without running it: module-level
code may read the run's environment) and this runtime, then forks one child per run, so a
run's agent code starts within milliseconds and shares the loaded libraries copy-on-write.

Protocol, over the ``SOCK_SEQPACKET`` socket on ``PAPAYYA_FORKSERVER_FD`` (one JSON object per
packet): the worker sends ``{"env", "cwd", "limits"}`` with one file descriptor attached, the
write end of the run's output pipe; the server answers ``{"pid"}`` (or ``{"error"}``) and,
when a child exits, ``{"exit": pid, "code": exit code or -signal}``. The child gets its own
session, the run's environment, work directory and limits, and runs ``papayya.runtime.main``.
Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import Any

from papayya.runtime.warm import apply_limits, die_with_parent, preload


def _child(job: dict[str, Any], output: int, control: socket.socket, wakeup: int) -> None:
    """In the forked child: become the run's agent process. Never returns."""
    code = 70
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        control.close()
        os.close(wakeup)
        os.setsid()
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        die_with_parent()
        os.environ.update(job["env"])
        os.chdir(job["cwd"])
        apply_limits(job.get("limits") or {})
        from papayya.runtime.main import main

        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        control.send(json.dumps(message).encode())


def serve() -> int:
    die_with_parent()
    control = socket.socket(fileno=int(os.environ.pop("PAPAYYA_FORKSERVER_FD")))
    preload(os.environ.get("PAPAYYA_AGENT_MODULE", ""))
    import papayya.runtime.main  # noqa: F401  (loaded once, shared by every child)

    read_wakeup, write_wakeup = os.pipe()
    os.set_blocking(write_wakeup, False)
    os.set_blocking(read_wakeup, False)
    signal.set_wakeup_fd(write_wakeup)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, "control")
    selector.register(read_wakeup, selectors.EVENT_READ, "child")
    _send(control, {"ready": True})
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                with contextlib.suppress(BlockingIOError):
                    os.read(read_wakeup, 4096)
                _reap(control)
                continue
            data, fds, _flags, _addr = socket.recv_fds(control, 65536, 1)
            if not data:  # the worker closed its end: stop
                return 0
            try:
                job = json.loads(data)
                (output,) = fds
            except (ValueError, TypeError) as exc:
                for fd in fds:
                    os.close(fd)
                _send(control, {"error": f"bad job: {exc}"})
                continue
            pid = os.fork()
            if pid == 0:
                _child(job, output, control, read_wakeup)
            os.close(output)
            _send(control, {"pid": pid})
        _reap(control)


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(control, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    sys.exit(serve())

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

The worker starts it as the agent's uid when it runs as root (``workers.process``), so nothing
here, and no agent code, runs with the worker's privileges; it then also has a network
namespace of its own, shared by its children only (``papayya.runtime.netns``): they reach the
control plane through its Unix socket (``PAPAYYA_RUNTIME_SOCKET``) and nothing else. It
makes itself non-dumpable before it loads the agent's imports: its children inherit that, so
an agent cannot read another agent's ``/proc/<pid>`` files (its run token) even under the
same uid.
Standard library only.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import gc
import importlib
import json
import os
import resource
import selectors
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

from papayya.runtime.identity import become

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4


def die_with_parent() -> None:
    """Linux: be killed when the worker that started us dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def not_dumpable() -> None:
    """Linux: no other process of our uid may read our memory or ``/proc`` files."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def imported_names(path: Path) -> list[str]:
    """The absolute modules a source file imports at its top level."""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def preload(module: str) -> None:
    """Import the agent module's imports; failures are left for the run to report."""
    path = Path(module)
    if path.suffix == ".py":
        sys.path.insert(0, str(path.resolve().parent))
        names = imported_names(path)
    else:
        names = [module.rpartition(".")[0]] if "." in module else []
    for name in names:
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def apply_limits(limits: dict[str, Any]) -> None:
    memory = limits.get("memory_mb")
    if memory:
        size = int(memory) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    cpu = limits.get("cpu_seconds")
    if cpu:
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + 5))
    files = limits.get("open_files")
    if files:
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(files), int(files)))


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
    control = socket.socket(fileno=int(os.environ.pop("PAPAYYA_FORKSERVER_FD")))
    module = os.environ.get("PAPAYYA_AGENT_MODULE", "")
    uid = os.environ.pop("PAPAYYA_FORKSERVER_UID", "")
    paths = os.environ.pop("PAPAYYA_FORKSERVER_PATHS", "").split(os.pathsep)
    data_dir = os.environ.pop("PAPAYYA_FORKSERVER_DATA_DIR", "")
    if uid:  # started as root: become the agent's uid before any agent code runs
        try:
            extra = [module if module.endswith(".py") else "", os.getcwd(), *paths]
            become(int(uid), extra, [data_dir])
        except (OSError, ValueError) as exc:
            _send(control, {"fatal": str(exc)})
            return 70
    die_with_parent()  # after the change of uid, which clears it
    not_dumpable()  # before any of the agent's code (preload) runs; inherited by children
    preload(module)
    from papayya.runtime.main import precompile  # loaded once, shared by every child

    precompile(module)

    # What is loaded now is shared copy-on-write with every child: out of the collector's
    # sight, a child's collections do not touch (and so copy) the pages it lives in.
    gc.freeze()

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

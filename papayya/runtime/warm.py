"""A warm interpreter for the ``process`` runtime: ``python -m papayya.runtime.warm``.

Started ahead of need for one deployment, it imports what the agent module imports (parsed
from its source, without running the module: module-level code may read the run's
environment) and this runtime, then waits for one job on stdin: a JSON line with the run's
environment, work directory and limits. It applies them and runs the agent as
``python -m papayya.runtime`` would. One job per process, so no state leaks between runs.
Standard library only.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import importlib
import json
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: be killed when the worker that started us dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


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


def serve() -> int:
    die_with_parent()
    module = os.environ.get("PAPAYYA_AGENT_MODULE", "")
    from papayya.runtime.main import main  # after the death signal is armed

    preload(module)
    print("ready", flush=True)  # the pool's cue that this interpreter is warm
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the pool was closed before a run needed us
    job = json.loads(line)
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    apply_limits(job.get("limits") or {})
    return main()


if __name__ == "__main__":
    sys.exit(serve())

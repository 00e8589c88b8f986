"""The process runtime's agent process alone: CPU and wall time of one no-op run's process.

Run from the repo root: ``.venv/bin/python bench/agent_process.py [--runs N] [--concurrency C]``.
It starts one fork server (``workers.process.ForkServer``, as the process runtime does, as the
agent's uid when run as root) and a stub of the runtime API on a Unix socket that answers the
four calls a no-op run makes (the run, the task's question, its result, completion), then
forks N runs of a no-op agent, C at a time, and prints a Markdown table. No database, no
worker, no API server: what is left is the agent process's own cost, which ``bench/e2e.py``
counts as "agent processes". Not a test.

The baseline is the fork floor measured in the same run: a process forked from an
interpreter with the same modules loaded that exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AGENT = """
from papayya import agent, current_run

@agent
def noop(task):
    return current_run().task("noop", lambda: task)
"""
WARMUP = 10


async def stub_api(path: str) -> Any:
    """The runtime API's answers to a no-op run, on a Unix socket."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        route = request.match_info["route"]
        if route == "run":
            return web.json_response({"run_id": "r", "agent_id": "a", "attempt": 1, "input": 1})
        if route == "tasks":
            return web.json_response({"recorded": False})
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/v1/runtime/{route:.+}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, path).start()
    os.chmod(path, 0o666)
    return runner


def prepare() -> Path:
    """A directory with the agent's module, that the agent's uid may read."""
    tmp = Path(tempfile.mkdtemp(prefix="papayya-agent-bench-"))
    tmp.chmod(0o755)
    (tmp / "noop_agent.py").write_text(AGENT)
    (tmp / "data").mkdir()
    return tmp


async def measure(tmp: Path, runs: int, concurrency: int) -> dict[str, float]:
    import psutil

    from workers.hardening import agent_uid
    from workers.process import ForkServer, ProcessHandle

    module = tmp / "noop_agent.py"
    socket_path = str(tmp / "api.sock")
    runner = await stub_api(socket_path)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
           "PAPAYYA_AGENT_MODULE": str(module)}  # fmt: skip
    uid = agent_uid("bench")
    server = await ForkServer.start(
        sys.executable, env, tmp, uid, (tmp, Path(socket_path)), tmp / "data"
    )
    job = json.dumps({
        "env": {"PAPAYYA_RUN_TOKEN": "t", "PAPAYYA_AGENT_MODULE": str(module),
                "PAPAYYA_HEARTBEAT_SECONDS": "2", "PAPAYYA_GRACE_SECONDS": "1",
                "HOME": str(tmp), "TMPDIR": str(tmp), "PAPAYYA_RUNTIME_SOCKET": socket_path},
        "cwd": str(tmp), "limits": {"open_files": 1024},
    }).encode()  # fmt: skip
    gate = asyncio.Semaphore(concurrency)

    async def one() -> int:
        async with gate:
            read_end, write_end = os.pipe()
            try:
                pid, exited = await server.fork(job, write_end)
            finally:
                os.close(write_end)
            handle = ProcessHandle(pid, exited, read_end, tmp / "scratch")
            code = await handle.wait()
            if code != 0:
                print(handle.output(), file=sys.stderr)
            return code

    try:
        for _ in range(WARMUP):
            await one()
        forkserver = psutil.Process(server.process.pid)
        before, started = forkserver.cpu_times(), time.perf_counter()
        codes = await asyncio.gather(*(one() for _ in range(runs)))
        elapsed = time.perf_counter() - started
        after = forkserver.cpu_times()
    finally:
        await server.close()
        await runner.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "failed": sum(code != 0 for code in codes),
        "wall": elapsed / runs * concurrency,
        "user": (after.children_user - before.children_user) / runs,
        "system": (after.children_system - before.children_system) / runs,
        "forkserver": (after.user + after.system - before.user - before.system) / runs,
        "as_uid": uid is not None,
    }


FORK_FLOOR = """
import gc, os, resource, sys
import papayya.runtime.main
gc.freeze()
n = int(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_CHILDREN)
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
after = resource.getrusage(resource.RUSAGE_CHILDREN)
print((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / n)
"""


def fork_floor(n: int) -> float:
    """CPU per process forked from an interpreter with what the fork server loads (the
    runtime, frozen), exiting at once; in a fresh interpreter, like the fork server."""
    found = subprocess.run(
        [sys.executable, "-P", "-c", FORK_FLOOR, str(n)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return float(found.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    load = os.getloadavg()
    found = asyncio.run(measure(prepare(), args.runs, args.concurrency))
    floor = fork_floor(args.runs)
    end = os.getloadavg()
    who = "the agent's uid (root worker)" if found["as_uid"] else "this process's uid"
    print(
        f"\n## Agent process of a no-op run ({platform.node()}, {os.cpu_count()} cores, load "
        f"{load[0]:.2f} at start, {end[0]:.2f} at end; {args.runs} runs, {args.concurrency} at "
        f"a time, as {who})\n"
    )
    print("| measurement | ms per run |")
    print("|---|---|")
    total = found["user"] + found["system"]
    print(f"| agent process CPU (user + kernel) | **{total * 1e3:.2f}** "
          f"({found['user'] * 1e3:.2f} + {found['system'] * 1e3:.2f}) |")  # fmt: skip
    print(f"| fork server CPU | {found['forkserver'] * 1e3:.2f} |")
    print(f"| elapsed × concurrency ÷ runs | {found['wall'] * 1e3:.2f} |")
    print(f"| (baseline) fork + exit of the same interpreter, CPU | {floor * 1e3:.2f} |")
    print(f"| failed runs | {int(found['failed'])} |")


if __name__ == "__main__":
    main()

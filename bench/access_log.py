"""Access-log benchmark: what one request's access-log line costs the API.

Run from the repo root: ``.venv/bin/python bench/access_log.py [--requests N]``. It serves a
one-route aiohttp app behind ``web.listener.GuardedRunner`` (as ``papayya api`` does), the
log going to a file at INFO as ``papayya server`` writes it, and drives it with keep-alive
requests from a client process of its own; for each access-log setting it reports the
server process's CPU per request (the 200s the runtime API answers nearly all of). The
baseline, in the same run and interleaved, is aiohttp's own ``AccessLogger`` with its default
format (what the listener used before ``web.accesslog``). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402
from aiohttp.web_log import AccessLogger  # noqa: E402

from web.listener import GuardedRunner, Limits  # noqa: E402

CLIENT = """
import asyncio, sys, aiohttp
async def main(url, n):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as http:
        async def one():
            async with http.post(url, data=b'{"ok": true}') as r:
                await r.read()
        for _ in range(n // 8):
            await asyncio.gather(*(one() for _ in range(8)))
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def hello(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"run_id": "run_x", "status": "running"}, status=201)


async def serve_once(mode: str, requests: int) -> float:
    """Server CPU (user + system) in microseconds per request with access-log ``mode``."""
    app = web.Application()
    app.router.add_post("/v1/runtime/tasks/result", hello)
    limits = Limits(access_log=mode if mode != "aiohttp" else "all")
    runner = GuardedRunner(app, limits)
    if mode == "aiohttp":  # the listener before web.accesslog: aiohttp's formatter
        runner._make_server = _aiohttp_logging(runner)  # type: ignore[method-assign]
    await runner.setup()
    sites = await runner.start("127.0.0.1", 0)
    port = sites[0]._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}/v1/runtime/tasks/result"
    client = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, url, "64")
    await client.wait()  # warm-up
    before = os.times()
    client = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, url,
                                                  str(requests))  # fmt: skip
    await client.wait()
    after = os.times()
    await runner.cleanup()
    cpu = (after.user - before.user) + (after.system - before.system)
    return cpu / requests * 1e6


def _aiohttp_logging(runner: GuardedRunner) -> Any:
    made = runner._make_server

    async def make() -> web.Server:
        server = await made()
        server._handler_args.update(  # type: ignore[attr-defined]
            access_log_class=AccessLogger, access_log=logging.getLogger("aiohttp.access")
        )
        return server

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="papayya-bench-access-"))
    handler = logging.FileHandler(log_dir / "api.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    modes = ("aiohttp", "all", "errors", "off")
    results: dict[str, list[float]] = {m: [] for m in modes}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for mode in modes:
            results[mode].append(asyncio.run(serve_once(mode, args.requests)))
    load_after = os.getloadavg()
    subprocess.run(["rm", "-rf", str(log_dir)], check=False)
    base = statistics.median(results["aiohttp"])
    print(f"{args.rounds} interleaved rounds of {args.requests} keep-alive requests (201), "
          f"8 in flight; load {load_before[0]:.2f} -> {load_after[0]:.2f}\n")  # fmt: skip
    print("| access log | server CPU per request, µs (median) | rounds | vs aiohttp's |")
    print("|---|---|---|---|")
    labels = {
        "aiohttp": "aiohttp AccessLogger, default format (before)",
        "all": "PAPAYYA_HTTP_ACCESS_LOG=all (lean line)",
        "errors": "PAPAYYA_HTTP_ACCESS_LOG=errors (default: 2xx not logged)",
        "off": "PAPAYYA_HTTP_ACCESS_LOG=off",
    }
    for mode in modes:
        med = statistics.median(results[mode])
        rounds = ", ".join(f"{v:.0f}" for v in results[mode])
        print(f"| {labels[mode]} | {med:.0f} | {rounds} | {med - base:+.0f} µs |")


if __name__ == "__main__":
    main()

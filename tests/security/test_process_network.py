"""A root worker's process agents have no network but the control plane (issue 14 §1,
DESIGN §8): a network namespace per deployment's fork server, never shared by two projects,
and every Unix socket of the host hidden but the control plane's, including database sockets
under the data directory made after the agent's fork server started (a restart)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from papayya.runtime.netns import host_sockets, socket_dirs
from tests.support.cloud import agent_workspace
from workers.hardening import agent_uid
from workers.process import ProcessRuntime
from workers.relay import remove_dead, socket_path
from workers.runtime import Deployment, Launch

pytestmark = pytest.mark.timeout(120)

# Its module-level code runs before the runtime first calls the control plane: it prints what
# it can reach, then the runtime fails on the bogus token (nothing answers on the socket).
PROBE = """
import json, os, socket, sys

def probe(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    try:
        s.connect(path)
        return "connected"
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()

def tcp(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__

print("REPORT " + json.dumps({
    "net": os.readlink("/proc/self/ns/net"),
    "uid": os.getuid(),
    "control": probe(os.environ["PAPAYYA_RUNTIME_SOCKET"]),
    "sockets": {p: probe(p) for p in json.loads(os.environ["PROBE_SOCKETS"])},
    "postgres_tcp": tcp(5432),
}), flush=True)
"""


@asynccontextmanager
async def listening(path: Path) -> AsyncIterator[None]:
    """A Unix socket listening at ``path`` in the host's namespaces, open to every uid."""
    server = await asyncio.start_unix_server(lambda r, w: w.close(), str(path))
    os.chmod(path, 0o777)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def probe_run(
    runtime: ProcessRuntime, deployment: Deployment, run: str, control: Path
) -> dict[str, Any]:
    launch = Launch(
        run_id=run, attempt=1, deployment=deployment, token="not-a-token",
        control_url="http://127.0.0.1:9", control_socket=control, grace_seconds=1,
    )  # fmt: skip
    handle = await runtime.start(launch)
    await asyncio.wait_for(handle.wait(), 60)
    (line,) = [t for t in handle.output().splitlines() if t.startswith("REPORT ")] or [
        handle.output()
    ]
    return dict(json.loads(line.removeprefix("REPORT ")))


async def test_agents_have_no_network_but_the_control_plane() -> None:
    assert os.geteuid() == 0, "the worker runs agents as other uids only as root"
    with agent_workspace() as work:
        data_dir = work / "data"
        pg = data_dir / "pg"
        pg.mkdir(parents=True)
        pg.chmod(0o777)
        elsewhere = work / "other"
        elsewhere.mkdir(mode=0o777)
        module = work / "agent.py"
        module.write_text(PROBE)
        module.chmod(0o644)
        early, late, other = pg / ".s.PGSQL.1", pg / ".s.PGSQL.2", elsewhere / "x.sock"
        control = work / "control.sock"
        probed = [str(early), str(late), str(other), "/run/postgresql/.s.PGSQL.5432"]
        env = {
            **os.environ,
            "PAPAYYA_AGENT_ENV": "PROBE_SOCKETS",
            "PROBE_SOCKETS": json.dumps(probed),
        }
        runtime = ProcessRuntime(data_dir, env=env)
        deployments = [
            Deployment(f"dep_{p}", f"proj_{p}", "probe", 1, "process", str(module))
            for p in ("a", "b")
        ]
        try:
            async with listening(control), listening(early), listening(other):
                assert str(early) in host_sockets()
                first = await probe_run(runtime, deployments[0], "r1", control)
                # Made after a's fork server started, as a restarted database would.
                async with listening(late):
                    second = await probe_run(runtime, deployments[0], "r2", control)
                    other_project = await probe_run(runtime, deployments[1], "r3", control)
        finally:
            await runtime.close()
    host_net = os.readlink("/proc/self/ns/net")
    for report in (first, second, other_project):
        assert report["uid"] != 0, report
        assert report["net"] != host_net, report
        assert report["control"] == "connected", report
        assert report["postgres_tcp"] == "ConnectionRefusedError", report
        for path, result in report["sockets"].items():
            # Gone from the agent's view, or a /dev/null where the socket was.
            assert result in ("FileNotFoundError", "ConnectionRefusedError"), (path, report)
    assert first["net"] == second["net"]  # one namespace per deployment's fork server...
    assert other_project["net"] != first["net"]  # ...and no two projects share one
    assert other_project["uid"] == agent_uid("proj_b") != first["uid"] == agent_uid("proj_a")


def test_the_host_sockets_are_read_from_proc_net_unix(tmp_path: Path) -> None:
    table = tmp_path / "unix"
    table.write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 20 /run/postgresql/.s.PGSQL.5432\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 21 @abstract\n"
        "0000000000000000: 00000003 00000000 00000000 0001 03 22\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 23 /srv/with space.sock\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 24 /run/postgresql/.s.PGSQL.5432\n"
    )
    # Abstract sockets stay behind in the host's network namespace; unbound ones have no path.
    assert host_sockets(str(table)) == ["/run/postgresql/.s.PGSQL.5432", "/srv/with space.sock"]
    data = tmp_path / "data"
    (data / "pg").mkdir(parents=True)
    sockets = [str(data / "pg" / ".s.PGSQL.1"), "/elsewhere/x.sock", str(data / "papayya.sock")]
    dirs = socket_dirs(sockets, [str(data)])
    assert str(data / "pg") in dirs and str(data) in dirs and "/elsewhere" not in dirs
    assert dirs.index(str(data)) < dirs.index(str(data / "pg"))  # shallowest first


def test_each_worker_relays_through_a_socket_of_its_own(tmp_path: Path) -> None:
    """Workers sharing a data directory once shared one relay path: a new worker replaced the
    socket that another's fork servers held, and a killed one left them a dead socket, so
    every later agent of those fork servers lost the control plane. Seen in
    ``tests/cloud/test_crash.py`` under load."""
    mine = socket_path(tmp_path, "http://127.0.0.1:8080")
    assert mine.name.startswith(f"relay-{os.getpid()}-")
    dead = tmp_path / "relay-999999999-0123456789ab.sock"  # past any pid_max: no such process
    live = tmp_path / f"relay-{os.getpid()}-0123456789ab.sock"
    dead.touch()
    live.touch()
    remove_dead(tmp_path)
    assert not dead.exists() and live.exists()

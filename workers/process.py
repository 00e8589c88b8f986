"""The ``process`` runtime: an attempt's agent in a local OS process of its own.

Each process gets the run's environment and nothing of the worker's secrets (a short list of
harmless variables, plus those named in ``PAPAYYA_AGENT_ENV``), a scratch directory that is
removed afterwards, resource limits, a session of its own (so stopping it stops what it
started) and death with the worker (``PR_SET_PDEATHSIG``).

Warm start: per deployment, a fork server (``papayya.runtime.forkserver``) keeps an
interpreter with the agent's imports loaded and forks one child per run, so a run's agent
code starts within milliseconds. A fork server that died is replaced at the next run.

A worker running as root starts the fork server as the project's own uid (``hardening.
agent_uid``, no supplementary groups) before it loads anything of the agent's, with the run's
scratch directory given to that uid: agent code never runs as root, so it can read neither
the worker's ``/proc`` files nor the server's private files. The fork server and its children
make themselves non-dumpable, so agents of the same uid cannot read each other's memory.
Each such fork server also has a network namespace of its own, with loopback only, and the
host's database and Redis sockets hidden (``papayya.runtime.netns``): its agents reach the
control plane through its Unix socket, or through a relay of the worker's (``workers.relay``)
where it has none to give them, as agents in containers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from workers import hardening
from workers.relay import Relay, remove_dead, socket_path
from workers.runtime import Deployment, Launch

log = logging.getLogger(__name__)

OUTPUT_LINES: Final = 200
OUTPUT_LINE_CHARS: Final = 2000
# Passed through to agents; everything else of the worker's environment stays behind.
SAFE_ENV: Final = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "SSL_CERT_FILE")
# Never passed, even if named in PAPAYYA_AGENT_ENV: credentials the gateway holds, and the
# server's own (AWS_SECRET_ACCESS_KEY for the bundle store ends in neither _API_KEY nor _SECRET).
FORBIDDEN_SUFFIXES: Final = ("_KEY", "_SECRET", "_TOKEN", "_PASSWORD", "_CREDENTIALS")


def agent_environment(worker_env: Mapping[str, str]) -> dict[str, str]:
    """What of the worker's environment an agent may see."""
    names = list(SAFE_ENV)
    names += [n.strip() for n in worker_env.get("PAPAYYA_AGENT_ENV", "").split(",") if n.strip()]
    env = {}
    for name in names:
        if name.upper().endswith(FORBIDDEN_SUFFIXES) or name.startswith("PAPAYYA_"):
            continue
        if name in worker_env:
            env[name] = worker_env[name]
    return env


def _connectable(path: Path, uid: int | None) -> bool:
    """Can an agent of ``uid`` connect to the control plane's socket? Opened to all if it is
    ours (as ``workers.docker.open_socket`` does: every call needs a run token, and the same
    API listens on loopback TCP); if not, the agent uses a relay of the worker's (or, of the
    worker's own uid, the TCP address) instead."""
    if uid is None:
        return True
    try:
        info = os.stat(path)
        if info.st_mode & 0o006 != 0o006:
            if info.st_uid != os.geteuid():
                return False
            os.chmod(path, info.st_mode | 0o666)
    except OSError:
        return False
    return True


class ProcessHandle:
    """A forked agent process: its exit comes from the fork server, its output from a pipe."""

    def __init__(self, pid: int, exited: asyncio.Future[int], output: int, scratch: Path) -> None:
        self.pid = pid
        self.scratch = scratch
        self._exited = exited
        self._lines: deque[tuple[float, str]] = deque(maxlen=OUTPUT_LINES)
        self._read_count = 0
        self._reader = asyncio.create_task(self._read(output))

    async def _read(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb")
        )
        try:
            while line := await reader.readline():
                text = line.decode(errors="replace").rstrip("\n")[:OUTPUT_LINE_CHARS]
                self._lines.append((time.time(), text))
                self._read_count += 1
        finally:
            transport.close()

    async def wait(self) -> int:
        code = await asyncio.shield(self._exited)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), 2)
        with contextlib.suppress(OSError):  # whatever it started goes with it
            os.killpg(self.pid, signal.SIGKILL)
        shutil.rmtree(self.scratch, ignore_errors=True)
        return code

    async def stop(self, grace: float) -> None:
        if not self._exited.done():
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), grace)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    os.killpg(self.pid, signal.SIGKILL)
        await self.wait()

    def lines(self) -> list[tuple[float, str]]:
        return list(self._lines)

    def counted(self) -> tuple[int, list[tuple[float, str]]]:
        return self._read_count, list(self._lines)

    def output(self) -> str:
        return "\n".join(text for _, text in self._lines)


class ForkServer:
    """One deployment's fork server, seen from the worker."""

    def __init__(self, process: asyncio.subprocess.Process, control: socket.socket) -> None:
        self.process = process
        self.control = control
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pids: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._lock = asyncio.Lock()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        python: str,
        env: dict[str, str],
        cwd: Path,
        uid: int | None = None,
        paths: tuple[Path, ...] = (),
        data_dir: Path | None = None,
    ) -> ForkServer:
        """Start one. With ``uid`` it becomes that uid before it loads any of the agent's code
        (``papayya.runtime.identity``), with ``paths`` (and Python, the module) in reach, and
        no network but those of ``paths`` that are sockets (sockets in ``data_dir`` hidden)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**env, "PAPAYYA_FORKSERVER_FD": str(theirs.fileno())}
        if uid is not None:
            env["PAPAYYA_FORKSERVER_UID"] = str(uid)
            env["PAPAYYA_FORKSERVER_PATHS"] = os.pathsep.join(str(p) for p in paths)
            env["PAPAYYA_FORKSERVER_DATA_DIR"] = str(data_dir or "")
        try:
            process = await asyncio.create_subprocess_exec(
                python, "-P", "-m", "papayya.runtime.forkserver",  # -P: not the cwd on sys.path
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=None, env=env, cwd=str(cwd), start_new_session=True,
                pass_fds=(theirs.fileno(),),
            )  # fmt: skip
        finally:
            theirs.close()
        ours.setblocking(False)
        return cls(process, ours)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and not self._reader.done()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(self.control, 65536)
                if not data:
                    break
                message = json.loads(data)
                if "exit" in message:
                    found = self._exits.setdefault(int(message["exit"]), loop.create_future())
                    if not found.done():
                        found.set_result(int(message["code"]))
                elif "ready" in message:
                    if not self.ready.done():
                        self.ready.set_result(None)
                elif "fatal" in message:  # it could not become the agent's uid: it exits
                    if not self.ready.done():
                        self.ready.set_exception(RuntimeError(str(message["fatal"])))
                else:
                    await self._pids.put(message)
        except (OSError, ValueError) as exc:
            log.warning("fork server %s: %s", self.process.pid, exc)
        finally:
            if not self.ready.done():
                self.ready.set_exception(RuntimeError("the fork server exited while starting"))
            await self._pids.put({"error": "the fork server exited"})
            for future in self._exits.values():  # its children died with it
                if not future.done():
                    future.set_result(-signal.SIGKILL)

    async def fork(self, job: bytes, output: int) -> tuple[int, asyncio.Future[int]]:
        await self.ready
        async with self._lock:  # one request at a time: answers come back in order
            socket.send_fds(self.control, [job], [output])
            answer = await asyncio.wait_for(self._pids.get(), 30)
        if "pid" not in answer:
            raise RuntimeError(str(answer.get("error") or answer))
        pid = int(answer["pid"])  # type: ignore[call-overload]
        future = self._exits.setdefault(pid, asyncio.get_running_loop().create_future())
        return pid, future

    async def close(self) -> None:
        self.control.close()
        if self.process.returncode is None:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class ProcessRuntime:
    name = "process"

    def __init__(
        self,
        data_dir: Path,
        *,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        uid_for: Callable[[str], int | None] = hardening.agent_uid,
    ) -> None:
        self.scratch_root = (data_dir / "scratch").resolve()
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        # Agents of other uids pass through to their own directory but list no other.
        self.scratch_root.chmod(0o711)
        self.data_dir = data_dir.resolve()
        self.uid_for = uid_for
        self.python = python
        self.base_env = agent_environment(os.environ if env is None else env)
        self._servers: dict[str, ForkServer] = {}
        self._starting: dict[str, asyncio.Lock] = {}
        self._relays: dict[str, Relay] = {}
        self._relaying = asyncio.Lock()

    async def server(self, deployment: Deployment, socket: Path | None = None) -> ForkServer:
        """The deployment's fork server, started (or replaced, if it died) as needed; its
        agents reach ``socket`` (the control plane's), if given."""
        key = deployment.deployment_id
        async with self._starting.setdefault(key, asyncio.Lock()):
            found = self._servers.get(key)
            if found is None or not found.alive:
                if found is not None:
                    await found.close()
                env = {**self.base_env, "PAPAYYA_AGENT_MODULE": deployment.entrypoint}
                paths = (self.scratch_root,) + (() if socket is None else (socket,))
                found = self._servers[key] = await ForkServer.start(
                    self.python,
                    env,
                    self.scratch_root,
                    self.uid_for(deployment.project_id),
                    paths,
                    self.data_dir,
                )
        return found

    async def relay(self, url: str) -> Path:
        """A Unix socket of the worker's, relayed to the control plane at ``url``."""
        async with self._relaying:
            found = self._relays.get(url)
            if found is None:
                if not self._relays:
                    remove_dead(self.data_dir)
                found = Relay(socket_path(self.data_dir, url), url)
                await found.start()
                self._relays[url] = found
        return found.path

    async def start(self, launch: Launch) -> ProcessHandle:
        deployment = launch.deployment
        scratch = launch.scratch or self.scratch_root / f"{launch.run_id}-{launch.attempt}"
        scratch.mkdir(parents=True, exist_ok=True)
        uid = self.uid_for(deployment.project_id)
        if uid is not None:
            os.chown(scratch, uid, uid)
            scratch.chmod(0o700)
        env = {
            **launch.secrets,
            "PAPAYYA_RUN_TOKEN": launch.token,
            "PAPAYYA_AGENT_MODULE": deployment.entrypoint,
            "PAPAYYA_HEARTBEAT_SECONDS": str(launch.heartbeat_seconds),
            "PAPAYYA_GRACE_SECONDS": str(launch.grace_seconds),
            "HOME": str(scratch),
            "TMPDIR": str(scratch),
        }
        control = launch.control_socket
        if control is not None and not _connectable(control, uid):
            control = None
        if control is None and uid is not None:  # no network but a Unix socket: a relay
            control = await self.relay(launch.control_url)
        if control is not None:
            env["PAPAYYA_RUNTIME_SOCKET"] = str(control)
        else:
            env["PAPAYYA_RUNTIME_URL"] = launch.control_url
        if deployment.agent_function:
            env["PAPAYYA_AGENT_FUNCTION"] = deployment.agent_function
        limits: dict[str, int] = {"open_files": 1024}
        if launch.limits.memory_mb:
            limits["memory_mb"] = launch.limits.memory_mb
        if launch.limits.timeout_seconds:
            limits["cpu_seconds"] = int(launch.limits.timeout_seconds)
        job = json.dumps({"env": env, "cwd": str(scratch), "limits": limits}).encode()
        socket_path = (
            Path(env["PAPAYYA_RUNTIME_SOCKET"]) if "PAPAYYA_RUNTIME_SOCKET" in env else None
        )
        for tries in range(3):
            server = await self.server(deployment, socket_path)
            read_end, write_end = os.pipe()
            try:
                pid, exited = await server.fork(job, write_end)
            except (OSError, RuntimeError):
                os.close(read_end)
                if tries == 2:
                    raise
                continue  # the fork server died: the next try replaces it
            finally:
                os.close(write_end)
            return ProcessHandle(pid, exited, read_end, scratch)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for server in self._servers.values():
            await server.close()
        self._servers.clear()
        for relay in self._relays.values():
            await relay.close()
        self._relays.clear()

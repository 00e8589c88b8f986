"""The ``docker`` runtime: an attempt's agent in an isolated container (DESIGN §8).

The container gets no network at all (``NetworkMode: none``). Its only way out is the
control plane's Unix socket, bind-mounted in; the in-container runtime forwards a loopback
port to it, so the agent's SDKs reach the gateway at ``http://127.0.0.1:<port>``. The root
filesystem is read-only with a tmpfs ``/tmp`` as work directory; every capability is dropped,
privileges cannot be gained, the user is not root, and memory, CPU and process counts are
capped. The environment holds the run's token and what the runtime needs to find the agent,
nothing of the worker's: no provider key can reach agent code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import aiodocker

from workers.builder import AGENT_UID, agent_module
from workers.runtime import Launch

log = logging.getLogger(__name__)

SOCKET_IN_CONTAINER: Final = "/run/papayya/control.sock"
OUTPUT_LINES: Final = 200
OUTPUT_LINE_CHARS: Final = 2000
TMPFS_MB: Final = 64
STOP_WAIT_SECONDS: Final = 30.0


class DockerUnavailable(Exception):
    """The Docker engine cannot be reached, or the image cannot be had."""


INSTALLATION_LABEL: Final = "papayya.installation"


def container_name(launch: Launch, installation: str | None = None) -> str:
    """Unique on the engine: two installations may each have a run of the same id."""
    if installation is None:
        return f"papayya-{launch.run_id}-{launch.attempt}"
    return f"papayya-{installation.removeprefix('ins_')[:12]}-{launch.run_id}-{launch.attempt}"


def container_config(
    launch: Launch, socket_gid: int | None = None, installation: str | None = None
) -> dict[str, Any]:
    """The container of one attempt: isolation, limits and the runtime's environment,
    labelled with its run, attempt and installation (whose workers alone may remove it)."""
    deployment = launch.deployment
    if deployment.image is None:
        raise ValueError(f"deployment {deployment.deployment_id} has no image")
    if launch.control_socket is None:
        raise ValueError("the docker runtime needs the control plane's Unix socket")
    env = {
        **launch.secrets,
        "PAPAYYA_RUNTIME_SOCKET": SOCKET_IN_CONTAINER,
        "PAPAYYA_RUN_TOKEN": launch.token,
        "PAPAYYA_AGENT_MODULE": agent_module(deployment.entrypoint),
        "PAPAYYA_HEARTBEAT_SECONDS": str(launch.heartbeat_seconds),
        "PAPAYYA_GRACE_SECONDS": str(launch.grace_seconds),
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
    }
    if deployment.agent_function:
        env["PAPAYYA_AGENT_FUNCTION"] = deployment.agent_function
    limits = launch.limits
    host: dict[str, Any] = {
        "NetworkMode": "none",
        "ReadonlyRootfs": True,
        "Tmpfs": {"/tmp": f"rw,nosuid,nodev,size={TMPFS_MB}m"},
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "Init": True,  # a real PID 1: signals reach the runtime, orphans are reaped
        "Mounts": [
            {"Type": "bind", "Source": str(launch.control_socket), "Target": SOCKET_IN_CONTAINER}
        ],
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "1"}},
        "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 1024}],
    }
    if limits.memory_mb:
        host["Memory"] = host["MemorySwap"] = limits.memory_mb * 1024 * 1024  # no swap
    if limits.cpus:
        host["NanoCpus"] = int(limits.cpus * 1e9)
    if limits.pids:
        host["PidsLimit"] = limits.pids
    if socket_gid:
        host["GroupAdd"] = [str(socket_gid)]  # a 0660 socket of the server's group
    labels = {
        "papayya.run": launch.run_id,
        "papayya.attempt": str(launch.attempt),
        "papayya.deployment": deployment.deployment_id,
    }
    if installation is not None:
        labels[INSTALLATION_LABEL] = installation
    return {
        "Image": deployment.image,
        "Env": [f"{k}={v}" for k, v in env.items()],
        "User": f"{AGENT_UID}:{AGENT_UID}",
        "WorkingDir": "/tmp",
        "StopSignal": "SIGTERM",
        "Labels": labels,
        "HostConfig": host,
    }


def open_socket(path: Path) -> int | None:
    """Make sure the container's user (not root, not the server's) can connect to the
    control plane's socket: the group to give it, if the socket's group grants access.

    A socket created with the usual umask lets only its owner connect. Opening it to all
    exposes nothing new: the same API listens on loopback TCP, and every call needs a token.
    """
    info = os.stat(path)
    if info.st_mode & 0o006 == 0o006:
        return None
    if info.st_mode & 0o060 == 0o060 and info.st_gid:
        return info.st_gid
    if info.st_uid != os.getuid():
        raise DockerUnavailable(f"{path}: agents in containers cannot connect (mode 0660 or 0666)")
    os.chmod(path, info.st_mode | 0o666)
    return None


class DockerHandle:
    """A started container. It is removed once it has exited and its output was read."""

    def __init__(self, container: Any, timeout: float | None) -> None:
        self.container = container
        self.id: str = container.id
        self._lines: deque[tuple[float, str]] = deque(maxlen=OUTPUT_LINES)
        self._read_count = 0
        self._partial = ""
        self._killed: int | None = None
        self._reader = asyncio.create_task(self._read())
        self._done = asyncio.create_task(self._wait())
        self._timer = (
            asyncio.get_running_loop().call_later(timeout, self._on_timeout) if timeout else None
        )
        self._stopping: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        try:
            async for chunk in self.container.log(stdout=True, stderr=True, follow=True):
                self._append(chunk)
        except (TimeoutError, aiodocker.DockerError, OSError) as exc:
            log.debug("container %s: output stream ended: %s", self.id[:12], exc)

    def _append(self, chunk: str) -> None:
        now = time.time()
        text = self._partial + chunk
        *lines, self._partial = text.split("\n")
        for line in lines:
            self._keep((now, line[:OUTPUT_LINE_CHARS]))
        if len(self._partial) > OUTPUT_LINE_CHARS:
            self._keep((now, self._partial[:OUTPUT_LINE_CHARS]))
            self._partial = ""

    async def _wait(self) -> int:
        try:
            status = await self.container.wait()
            code = int(status.get("StatusCode", -1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 2)
            info: dict[str, dict[str, object]] = {"State": {}}
            with contextlib.suppress(aiodocker.DockerError):  # removed already: it exited
                info = await self.container.show()
            if info["State"].get("OOMKilled"):
                self._keep((time.time(), "papayya: the agent was killed: out of memory"))
                self._killed = signal.SIGKILL
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._reader.cancel()
            with contextlib.suppress(aiodocker.DockerError):
                await self.container.delete(force=True)
        # Docker reports death by signal N as 128 + N; the protocol says -N.
        if self._killed is not None and code == 128 + self._killed:
            return -self._killed
        return code

    async def wait(self) -> int:
        return await asyncio.shield(self._done)

    async def stop(self, grace: float) -> None:
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(grace))
        await asyncio.shield(self._stopping)
        await self.wait()

    async def _stop(self, grace: float) -> None:
        if not self._done.done():
            await self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._done), grace)
            except TimeoutError:
                await self._signal(signal.SIGKILL)

    async def _signal(self, signum: int) -> None:
        self._killed = signum
        with contextlib.suppress(aiodocker.DockerError):  # it exited meanwhile
            await self.container.kill(signal=signal.Signals(signum).name)

    def _on_timeout(self) -> None:
        self._keep((time.time(), "papayya: the attempt ran out of time"))
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(STOP_WAIT_SECONDS))

    def _keep(self, line: tuple[float, str]) -> None:
        self._lines.append(line)
        self._read_count += 1

    def counted(self) -> tuple[int, list[tuple[float, str]]]:
        return self._read_count, list(self._lines)  # a partial last line waits for its end

    def lines(self) -> list[tuple[float, str]]:
        found = list(self._lines)
        return [*found, (time.time(), self._partial)] if self._partial else found

    def output(self) -> str:
        return "\n".join(text for _, text in self.lines())


class DockerRuntime:
    """Runs deployments' images with one Docker engine (``DOCKER_HOST`` or the local socket).

    ``installation`` (papayya.installation) labels and names its containers: an engine may
    serve several installations (staging and production, parallel CI jobs), and a worker
    removes only containers of its own installation."""

    name = "docker"

    def __init__(
        self, docker: aiodocker.Docker | None = None, *, installation: str | None = None
    ) -> None:
        self.installation = installation
        self._docker = docker
        self._own = docker is None
        self._pulls: dict[str, asyncio.Task[None]] = {}

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker()
        return self._docker

    async def ensure_image(self, image: str) -> None:
        """Pull ``image`` unless the engine has it; concurrent starts share one pull."""
        try:
            await self.docker.images.inspect(image)
            return
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise DockerUnavailable(f"docker: {exc.message}") from None
        pulling = self._pulls.get(image)
        if pulling is None or pulling.done():
            pulling = self._pulls[image] = asyncio.create_task(self._pull(image))
        await asyncio.shield(pulling)

    async def _pull(self, image: str) -> None:
        try:
            await self.docker.images.pull(image)
        except aiodocker.DockerError as exc:
            raise DockerUnavailable(f"cannot pull {image}: {exc.message}") from None

    async def start(self, launch: Launch) -> DockerHandle:
        gid = None
        if launch.control_socket is not None:
            gid = open_socket(launch.control_socket)
        config = container_config(launch, gid, self.installation)
        await self.ensure_image(config["Image"])
        name = container_name(launch, self.installation)
        with contextlib.suppress(aiodocker.DockerError):  # a leftover of a crashed worker
            await (await self.docker.containers.get(name)).delete(force=True)
        container = await self.docker.containers.create(config, name=name)
        try:
            await container.start()
        except aiodocker.DockerError:
            with contextlib.suppress(aiodocker.DockerError):
                await container.delete(force=True)
            raise
        return DockerHandle(container, launch.limits.timeout_seconds)

    async def reap(self, current: Callable[[str, int], Awaitable[bool]]) -> int:
        """Remove this installation's containers of attempts that are over: left behind by
        a worker that died, or by an attempt the sweeper replaced. ``current(run, attempt)``
        says whether that attempt is still the run's running one. Containers of another
        installation, or of none, are never touched; a runtime without an installation
        removes nothing. Returns how many were removed."""
        if self.installation is None:
            return 0
        removed = 0
        containers = await self.docker.containers.list(
            all=True,
            filters={"label": ["papayya.run", f"{INSTALLATION_LABEL}={self.installation}"]},
        )
        for container in containers:
            labels = container._container.get("Labels") or {}
            if labels.get(INSTALLATION_LABEL) != self.installation:
                continue
            run_id, attempt = labels.get("papayya.run"), labels.get("papayya.attempt", "")
            if not run_id or not attempt.isdigit() or await current(run_id, int(attempt)):
                continue
            with contextlib.suppress(aiodocker.DockerError):
                await container.delete(force=True)
                removed += 1
        return removed

    async def close(self) -> None:
        for task in self._pulls.values():
            task.cancel()
        if self._own and self._docker is not None:
            await self._docker.close()
            self._docker = None

"""The image builder: a vetted bundle becomes ``<registry>/papayya/<agent>:<version>``.

The image is the base image (``PAPAYYA_BASE_IMAGE``, any with Python 3.10+) plus three
things: the bundle under ``/app``, the standard-library runtime (``papayya/__init__.py``,
``papayya/agentapi.py``, ``papayya/runtime/``) under ``/opt/papayya/lib``, and, if the bundle
has requirements, a virtualenv installed from a wheelhouse. The wheelhouse is resolved here,
on the builder, for the base image's Python and platform, so the Docker build itself runs
with no network (``networkmode=none``). Only wheels are taken: an sdist would run its
setup code on the builder.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

import aiodocker
from aiodocker.jsonstream import json_stream_stream

import papayya
from papayya import bundles

LogSink = Callable[[str], Awaitable[None]]
DEFAULT_BASE_IMAGE: Final = "papayya/python-base:bookworm"
AGENT_UID: Final = 10001
APP_DIR: Final = "/app"
LIB_DIR: Final = "/opt/papayya/lib"
VENV_DIR: Final = "/opt/papayya/venv"
SYSTEM_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the image needs of papayya: importable with the standard library alone (DESIGN §2).
RUNTIME_FILES: Final = ("__init__.py", "agentapi.py", "runtime")
PUSH_CHATTER: Final = frozenset({"Preparing", "Waiting", "Pushing"})
PROBE: Final = (
    "import json, os, platform, sys; print(json.dumps({"
    "'version': '%d.%d' % sys.version_info[:2], 'implementation': sys.implementation.name,"
    "'machine': platform.machine(), 'libc': ' '.join(platform.libc_ver())}))"
)


class BuildError(Exception):
    """The image could not be built or pushed; the message says why, the log says more."""


@dataclass(frozen=True)
class Target:
    """The Python of a base image, as wheels are tagged for it."""

    version: str  # "3.11"
    machine: str = "x86_64"
    libc: str = "glibc 2.36"  # platform.libc_ver(); "" on musl
    implementation: str = "cpython"

    def platforms(self) -> list[str]:
        """Wheel platform tags this image can install, newest first."""
        arch = self.machine
        kind, _, version = self.libc.partition(" ")
        if kind == "glibc" and version.count(".") >= 1:
            major, minor = (int(x) for x in version.split(".")[:2])
            tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
            tags += [f"{name}_{arch}" for m, name in legacy.items() if m <= minor]
            return tags
        return [f"musllinux_1_{m}_{arch}" for m in (2, 1, 0)]


@dataclass(frozen=True)
class BuildSpec:
    deployment_id: str
    agent: str  # the agent's slug: the image repository's last part
    version: int
    entrypoint: str  # a path in the bundle (agent.py) or a module name
    bundle: Path  # a bundle that bundles.inspect_bundle accepted
    requirements: str | None = None  # a file in the bundle


def image_name(registry: str | None, agent: str, version: int) -> str:
    repository = f"papayya/{agent}:{version}"
    return f"{registry.rstrip('/')}/{repository}" if registry else repository


def agent_module(entrypoint: str) -> str:
    """``PAPAYYA_AGENT_MODULE`` inside the image: a bundle path under /app, or a module."""
    return f"{APP_DIR}/{entrypoint}" if entrypoint.endswith(".py") else entrypoint


def dockerfile(base: str, entrypoint: str, with_requirements: bool) -> str:
    path = f"{VENV_DIR}/bin:{SYSTEM_PATH}" if with_requirements else SYSTEM_PATH
    lines = []
    if with_requirements:
        # A stage of its own, so the wheels stay out of the final image.
        lines += [
            f"FROM {base} AS deps",
            "COPY requirements.txt wheels/ /opt/papayya/wheels/",
            f"RUN python3 -m venv {VENV_DIR} && {VENV_DIR}/bin/python -m pip install --no-index"
            " --no-cache-dir --disable-pip-version-check --find-links /opt/papayya/wheels"
            " -r /opt/papayya/wheels/requirements.txt",
            "",
        ]
    lines += [f"FROM {base}"]
    if with_requirements:
        lines += [f"COPY --from=deps {VENV_DIR} {VENV_DIR}"]
    env = {
        "PATH": path,
        "PYTHONPATH": f"{LIB_DIR}:{APP_DIR}",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "USER": "agent",
        "PAPAYYA_AGENT_MODULE": agent_module(entrypoint),
    }
    lines += [
        f"COPY runtime/ {LIB_DIR}/",
        f"COPY app/ {APP_DIR}/",
        "ENV " + " ".join(f"{k}={json.dumps(v)}" for k, v in env.items()),
        # Compiled now, since the root filesystem is read-only at run time (a faster start).
        f"RUN python3 -m compileall -q {LIB_DIR} {APP_DIR} >/dev/null || true",
        f"USER {AGENT_UID}:{AGENT_UID}",
        "WORKDIR /tmp",
        'ENTRYPOINT ["python3", "-m", "papayya.runtime"]',
    ]
    return "\n".join(lines) + "\n"


def runtime_files() -> list[tuple[Path, PurePosixPath]]:
    """The papayya files the image carries, as (source, path under ``runtime/papayya``)."""
    package = Path(papayya.__file__).parent
    found = []
    for name in RUNTIME_FILES:
        path = package / name
        sources = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for source in sources:
            found.append((source, PurePosixPath(source.relative_to(package).as_posix())))
    return found


def write_context(
    target: Path, spec: BuildSpec, dockerfile_text: str, wheelhouse: Path | None
) -> None:
    """The build context as an uncompressed tar: Dockerfile, app/, runtime/, wheels/."""

    def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        add_bytes(tar, "Dockerfile", dockerfile_text.encode())
        for source, rel in runtime_files():
            add_bytes(tar, f"runtime/papayya/{rel}", source.read_bytes())
        for info, stream in bundles.members(spec.bundle):
            info.name = f"app/{info.name}"
            if info.type == tarfile.LNKTYPE:
                info.linkname = f"app/{info.linkname}"
            tar.addfile(info, stream)
        if wheelhouse is not None:
            assert spec.requirements is not None
            add_bytes(tar, "requirements.txt", bundles.read_member(spec.bundle, spec.requirements))
            folder = tarfile.TarInfo("wheels")
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)  # COPY wants it even if no requirement needs a wheel
            for wheel in sorted(wheelhouse.iterdir()):
                add_bytes(tar, f"wheels/{wheel.name}", wheel.read_bytes())


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[str]:
    while line := await stream.readline():
        yield line.decode(errors="replace").rstrip()


class Builder:
    """Builds and pushes agent images with one Docker engine."""

    def __init__(
        self,
        docker: aiodocker.Docker,
        *,
        base_image: str = DEFAULT_BASE_IMAGE,
        registry: str | None = None,
        python: str = sys.executable,
        pip_timeout: float = 600,
    ) -> None:
        self.docker = docker
        self.base_image = base_image
        self.registry = registry
        self.python = python
        self.pip_timeout = pip_timeout
        self._targets: dict[str, Target] = {}

    async def build(self, spec: BuildSpec, log: LogSink) -> str:
        """Build, tag and push the image of ``spec``; its name. Progress goes to ``log``."""
        image = image_name(self.registry, spec.agent, spec.version)
        with tempfile.TemporaryDirectory(prefix="papayya-build-") as tmp:
            work = Path(tmp)
            await self._ensure_base(log)
            wheelhouse = None
            if spec.requirements:
                wheelhouse = work / "wheels"
                await self.resolve_wheels(spec, wheelhouse, log)
            text = dockerfile(self.base_image, spec.entrypoint, wheelhouse is not None)
            context = work / "context.tar"
            await asyncio.to_thread(write_context, context, spec, text, wheelhouse)
            await log(f"building {image} from {self.base_image}\n")
            await self._docker_build(context, image, spec, log)
        if self.registry:
            await self._push(image, log)
        return image

    async def _ensure_base(self, log: LogSink) -> None:
        try:
            await self.docker.images.inspect(self.base_image)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
            await log(f"pulling {self.base_image}\n")
            try:
                await self.docker.images.pull(self.base_image)
            except aiodocker.DockerError as pulled:
                raise BuildError(f"base image {self.base_image}: {pulled.message}") from None

    async def target(self) -> Target:
        """The base image's Python (run once per base image, with no network)."""
        found = self._targets.get(self.base_image)
        if found is None:
            config: dict[str, Any] = {
                "Image": self.base_image,
                "Cmd": ["python3", "-c", PROBE],
                "Entrypoint": [],
                "HostConfig": {"NetworkMode": "none"},
            }
            container = await self.docker.containers.create(config)
            try:
                await container.start()
                status = await container.wait()
                output = "".join(await container.log(stdout=True, stderr=True))
            finally:
                await container.delete(force=True)
            if status.get("StatusCode") != 0:
                raise BuildError(f"base image {self.base_image} has no python3: {output[-500:]}")
            data = json.loads(output.strip().splitlines()[-1])
            found = self._targets[self.base_image] = Target(
                data["version"], data["machine"], data["libc"], data["implementation"]
            )
        return found

    async def resolve_wheels(self, spec: BuildSpec, wheelhouse: Path, log: LogSink) -> None:
        """``pip download`` the requirements' wheels for the base image's Python."""
        assert spec.requirements is not None
        target = await self.target()
        if target.implementation != "cpython":
            raise BuildError(f"base image Python is {target.implementation}; cpython is needed")
        requirements = wheelhouse.parent / "requirements.txt"
        await asyncio.to_thread(self._prepare, wheelhouse, requirements, spec)
        command = [
            self.python, "-m", "pip", "download", "--disable-pip-version-check",
            "--no-input", "--progress-bar", "off", "--only-binary=:all:",
            "--implementation", "cp", "--python-version", target.version,
            *(arg for tag in target.platforms() for arg in ("--platform", tag)),
            "--dest", str(wheelhouse), "-r", str(requirements),
        ]  # fmt: skip
        await log(f"resolving {spec.requirements} for Python {target.version} ({target.libc})\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_REQUIRE")}
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            cwd=wheelhouse.parent, env=env,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            async with asyncio.timeout(self.pip_timeout):
                async for line in _lines(process.stdout):
                    await log(line + "\n")
                code = await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise BuildError(f"resolving requirements took over {self.pip_timeout:.0f} s") from None
        if code != 0:
            raise BuildError(
                f"pip could not resolve {spec.requirements} to wheels for Python "
                f"{target.version} (sdists are not built); see the build log"
            )

    @staticmethod
    def _prepare(wheelhouse: Path, requirements: Path, spec: BuildSpec) -> None:
        assert spec.requirements is not None
        wheelhouse.mkdir(parents=True, exist_ok=True)
        requirements.write_bytes(bundles.read_member(spec.bundle, spec.requirements))

    async def _docker_build(self, context: Path, image: str, spec: BuildSpec, log: LogSink) -> None:
        params = {
            "t": image,
            "rm": "1",
            "forcerm": "1",
            "networkmode": "none",  # the build needs no network, so it gets none
            "labels": json.dumps({
                "papayya.deployment": spec.deployment_id,
                "papayya.agent": spec.agent,
                "papayya.version": str(spec.version),
            }),
        }  # fmt: skip

        async def body() -> AsyncIterator[bytes]:
            with context.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, 1024 * 1024):
                    yield chunk

        # aiodocker's images.build() has no networkmode parameter: call the endpoint itself.
        query = self.docker._query(
            "build", "POST", params=params, data=body(),
            headers={"content-type": "application/x-tar"}, timeout=None,
        )  # fmt: skip
        try:
            async with query as response:
                async for item in json_stream_stream(response):
                    if item.get("stream"):
                        await log(str(item["stream"]))
        except aiodocker.DockerError as exc:
            raise BuildError(f"docker build failed: {exc.message.strip()}") from None

    async def _push(self, image: str, log: LogSink) -> None:
        repository, _, tag = image.rpartition(":")
        await log(f"pushing {image}\n")
        try:
            async for item in self.docker.images.push(repository, tag=tag, stream=True):
                status = item.get("status")
                if status and status not in PUSH_CHATTER:
                    layer = f"{item['id']}: " if item.get("id") else ""
                    await log(f"{layer}{status}\n")
        except aiodocker.DockerError as exc:
            raise BuildError(f"push to {self.registry} failed: {exc.message.strip()}") from None

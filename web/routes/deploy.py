"""``POST /v1/agents/{id}/deploy``: a bundle in, a deployment out, the image built behind.

The upload is vetted in full (``workers.bundles``) before anything is written: a hostile or
broken bundle answers 4xx and leaves no blob, row or event behind. An accepted bundle is
stored by its SHA-256 and its deployment answers ``202`` in status ``building``; the build
runs in this server (``BuildService``), streams its log into the deployment row and ends it
``ready`` with the image, or ``failed`` with the reason.

With ``runtime=process`` (no Docker on this machine) the bundle is unpacked under the data
dir instead and the deployment is ready at once, for this machine's process workers: only for
projects the operator trusts (``PAPAYYA_PROCESS_RUNTIME``), 403 for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Annotated, Final, Literal

import aiodocker
import msgspec
from aiohttp import BodyPartReader, web

from papayya.config import Config
from papayya.domain import events as ev
from papayya.errors import InvalidInput, PayloadTooLarge
from papayya.readmodels.agents import Agent
from papayya.readmodels.deployments import Deployment, Deployments
from papayya.readmodels.projects import new_id
from web import http, keys
from web.openapi import api
from web.routes import deployments
from workers import blobstore, bundles
from workers.builder import Builder, BuildError, BuildSpec

log = logging.getLogger(__name__)

REQUIREMENTS: Final = "requirements.txt"
MAX_FIELD_BYTES: Final = 1000
MAX_LOG_CHARS: Final = 200_000
LOG_FLUSH_SECONDS: Final = 0.5
TOUCH_SECONDS: Final = 20.0
STALE_SECONDS: Final = 120.0
LIMITS = bundles.Limits()  # what an uploaded bundle may hold
Entrypoint = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class DeployForm(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The multipart fields besides ``file`` (the bundle, a tar.gz). ``requirements.txt`` at
    the bundle's root, if there is one, is installed into the image."""

    runtime: Literal["docker", "process"] = "docker"
    entrypoint: Entrypoint = "agent.py"
    agent_function: deployments.FunctionName | None = None


def check_entrypoint(entrypoint: str, manifest: bundles.Manifest) -> str:
    """A ``.py`` file of the bundle (clean relative path), or the dotted name of a module of
    the bundle. Either resolves to a regular file inside the bundle: the manifest lists
    regular files only, so no path, link or module name reaches outside it."""
    if entrypoint.endswith(".py"):
        path = PurePosixPath(entrypoint)
        if path.is_absolute() or ".." in path.parts or "\\" in entrypoint:
            raise InvalidInput("entrypoint must be a .py file of the bundle (a relative path)")
        clean = "/".join(p for p in path.parts if p != ".")
        if clean not in manifest.files:
            raise InvalidInput(f"entrypoint {clean} is not a file of the bundle")
        return clean
    parts = entrypoint.split(".")
    if not all(part.isidentifier() for part in parts):
        raise InvalidInput("entrypoint must be a .py file of the bundle or a dotted module name")
    base = "/".join(parts)
    if f"{base}.py" not in manifest.files and f"{base}/__init__.py" not in manifest.files:
        raise InvalidInput(f"entrypoint {entrypoint} is not a module of the bundle")
    return entrypoint


async def _save_upload(part: BodyPartReader, target: Path, limit: int) -> str:
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as out:
        while chunk := await part.read_chunk(256 * 1024):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the bundle is larger than {limit} bytes")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


async def read_upload(request: web.Request, work: Path) -> tuple[DeployForm, Path, str]:
    """The form's fields, and the bundle saved under ``work`` with its SHA-256."""
    if request.content_type != "multipart/form-data":
        raise InvalidInput("send the bundle as multipart/form-data with a 'file' part")
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError) as exc:
        raise InvalidInput(f"malformed multipart body: {exc}") from None
    fields: dict[str, str] = {}
    bundle = work / "bundle.tar.gz"
    sha256 = None
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise InvalidInput("nested multipart bodies are not accepted")
            if part.name == "file":
                if sha256 is not None:
                    raise InvalidInput("send one 'file' part")
                sha256 = await _save_upload(part, bundle, LIMITS.bundle_bytes)
            elif part.name and part.name not in fields:
                raw = await part.read_chunk(MAX_FIELD_BYTES + 1)
                if len(raw) > MAX_FIELD_BYTES or await part.read_chunk(1):
                    raise InvalidInput(f"field {part.name} is longer than {MAX_FIELD_BYTES}")
                fields[part.name] = raw.decode(errors="strict")
            else:
                raise InvalidInput(f"unexpected or repeated part {part.name!r}")
    except (ValueError, UnicodeDecodeError, AssertionError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"malformed multipart body: {exc}") from None
    if sha256 is None:
        raise InvalidInput("the 'file' part (the bundle, a tar.gz) is missing")
    try:
        form = msgspec.convert(fields, DeployForm)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid form field: {exc}") from None
    return form, bundle, sha256


@api.route(
    "POST", "/v1/agents/{id}/deploy",
    "Deploy a bundle (multipart: file, runtime, entrypoint): 202 while the image builds "
    "(runtime process: 403 unless PAPAYYA_PROCESS_RUNTIME allows the project)",
    response=deployments.DeploymentOut, status=202, tag="deployments",
    errors=((403, deployments.FORBIDDEN),),
)  # fmt: skip
async def deploy(request: web.Request) -> web.Response:
    agent = await request.app[keys.AGENTS].find(http.project_id(request), http.path_id(request))
    service = request.app[BUILDS]
    with tempfile.TemporaryDirectory(prefix="papayya-upload-") as tmp:
        form, bundle, sha256 = await read_upload(request, Path(tmp))
        if form.runtime == "process":
            deployments.require_process_runtime(request, agent.project_id)
        manifest = await asyncio.to_thread(bundles.inspect_bundle, bundle, LIMITS)
        entrypoint = check_entrypoint(form.entrypoint, manifest)
        if form.runtime == "process":
            made = await service.unpack(agent, form, entrypoint, bundle, sha256)
            return http.json(made.out(), 202)  # ready already
        key = f"bundles/{sha256}.tar.gz"
        if not await service.blobs.exists(key):
            await service.blobs.put(key, bundle, sha256)
    created = ev.DeploymentCreated(
        deployment_id=new_id("dep"), project_id=agent.project_id, agent_id=agent.id,
        version=1, runtime="docker", entrypoint=entrypoint,
        agent_function=form.agent_function, source=key, bundle_sha256=sha256,
    )  # fmt: skip
    made = await service.deployments.create(agent.project_id, agent.id, created, "building")
    service.submit(made.deployment_id)
    return http.json(made.out(), 202)


class BuildLog:
    """The build log, appended to the deployment row in batches (and kept bounded)."""

    def __init__(self, deployments: Deployments, deployment_id: str) -> None:
        self.deployments = deployments
        self.deployment_id = deployment_id
        self._pending: list[str] = []
        self._flushed = time.monotonic()

    async def __call__(self, text: str) -> None:
        self._pending.append(text)
        if time.monotonic() - self._flushed >= LOG_FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        self._flushed = time.monotonic()
        if self._pending:
            text, self._pending = "".join(self._pending), []
            await self.deployments.append_build_log(self.deployment_id, text, MAX_LOG_CHARS)


class BuildService:
    """Image builds in the background of this server, a few at a time."""

    def __init__(
        self, deployments: Deployments, config: Config, blobs: blobstore.BlobStore
    ) -> None:
        self.deployments = deployments
        self.config = config
        self.blobs = blobs
        self._slots = asyncio.Semaphore(1)  # builds are CPU and disk bound: 2 cores here
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._docker: aiodocker.Docker | None = None

    def submit(self, deployment_id: str) -> None:
        """Build it here, unless builds run elsewhere (their servers adopt it when stale)."""
        if self.config.run_builder and deployment_id not in self._tasks:
            task = asyncio.create_task(self._build(deployment_id), name=f"build-{deployment_id}")
            self._tasks[deployment_id] = task
            task.add_done_callback(lambda _: self._tasks.pop(deployment_id, None))

    async def wait(self, deployment_id: str) -> None:
        """Until the build of ``deployment_id`` in this process ends (tests, benchmarks)."""
        task = self._tasks.get(deployment_id)
        if task is not None:
            await asyncio.shield(task)

    async def _build(self, deployment_id: str) -> None:
        async with self._slots:
            row = await self.deployments.build(deployment_id)
            if row is None or row.status != "building":
                return
            sink = BuildLog(self.deployments, deployment_id)
            touch = asyncio.create_task(self._touch(deployment_id))
            started = time.monotonic()
            try:
                image = await self._image(row, sink)
            except asyncio.CancelledError:
                raise  # shutting down: another server (or the next start) takes it over
            except Exception as exc:
                message = _reason(exc)
                log.warning("deployment %s failed: %s", deployment_id, message)
                await sink(f"error: {message}\n")
                await sink.flush()
                await self._finish(deployment_id, None, message)
                return
            finally:
                touch.cancel()
            await sink(f"built and pushed {image} in {time.monotonic() - started:.1f} s\n")
            await sink.flush()
            await self._finish(deployment_id, image, None)

    async def _image(self, row: Deployment, sink: BuildLog) -> str:
        # An image build's row: its bundle and its agent are known.
        assert row.source is not None and row.bundle_sha256 is not None and row.slug is not None
        with tempfile.TemporaryDirectory(prefix="papayya-bundle-") as tmp:
            bundle = Path(tmp) / "bundle.tar.gz"
            await self.blobs.get(row.source, bundle, row.bundle_sha256)
            manifest = await asyncio.to_thread(bundles.inspect_bundle, bundle)
            spec = BuildSpec(
                deployment_id=row.deployment_id, agent=row.slug, version=row.version,
                entrypoint=row.entrypoint, bundle=bundle,
                requirements=REQUIREMENTS if REQUIREMENTS in manifest.files else None,
            )  # fmt: skip
            return await self.builder().build(spec, sink)

    def builder(self) -> Builder:
        if self._docker is None:
            self._docker = aiodocker.Docker()
        return Builder(
            self._docker, base_image=self.config.base_image, registry=self.config.registry
        )

    async def _finish(self, deployment_id: str, image: str | None, error: str | None) -> None:
        await self.deployments.finish(deployment_id, image, error)

    async def _touch(self, deployment_id: str) -> None:
        while True:
            await asyncio.sleep(TOUCH_SECONDS)
            with contextlib.suppress(Exception):
                await self.deployments.touch_build(deployment_id)

    async def adopt_stale(self) -> None:
        """Take over builds that lost their builder, now and then every minute."""
        while True:
            try:
                await self.adopt_once()
            except Exception as exc:
                log.warning("looking for stale builds failed: %s", exc)
            await asyncio.sleep(60)

    async def adopt_once(self) -> list[str]:
        claimed = await self.deployments.claim_stale(10, STALE_SECONDS)
        for deployment_id in claimed:
            log.info("resuming the build of deployment %s", deployment_id)
            self.submit(deployment_id)
        return claimed

    async def unpack(
        self,
        agent: Agent,
        form: DeployForm,
        entrypoint: str,
        bundle: Path,
        sha256: str,
    ) -> Deployment:
        """A ``process`` deployment: the bundle unpacked for this machine's workers."""
        if not entrypoint.endswith(".py"):
            raise InvalidInput("a process deployment's entrypoint must be a .py file")
        deployment_id = new_id("dep")
        root = (self.config.data_dir / "deployments").resolve()
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o711)  # agents (another uid, as root) reach their bundle but list no other
        target = root / deployment_id
        await asyncio.to_thread(bundles.extract, bundle, target)
        created = ev.DeploymentCreated(
            deployment_id=deployment_id, project_id=agent.project_id, agent_id=agent.id,
            version=1, runtime="process", entrypoint=str(target / entrypoint),
            agent_function=form.agent_function, source=str(target), bundle_sha256=sha256,
        )  # fmt: skip
        try:
            return await self.deployments.create(agent.project_id, agent.id, created, "ready")
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._docker is not None:
            await self._docker.close()
        await self.blobs.close()


def _reason(exc: Exception) -> str:
    if isinstance(exc, BuildError | bundles.InvalidBundle):
        return str(exc)
    if isinstance(exc, aiodocker.DockerError):
        return f"docker: {exc.message}"
    if isinstance(exc, OSError) and "docker.sock" in str(exc):
        return f"the Docker engine is not reachable: {exc}"
    return f"{type(exc).__name__}: {exc}"


BUILDS: Final = web.AppKey("builds", BuildService)


async def builds_ctx(app: web.Application) -> AsyncIterator[None]:
    """The build service of this server (after the event store in ``cleanup_ctx``)."""
    config = app[keys.CONFIG]
    service = BuildService(app[keys.DEPLOYMENTS], config, blobstore.from_config(config))
    app[BUILDS] = service
    adopting = None
    if config.run_builder:
        adopting = asyncio.create_task(service.adopt_stale(), name="adopt-stale-builds")
    yield
    if adopting is not None:
        adopting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await adopting
    await service.close()

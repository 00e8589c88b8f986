"""Image builds in the background of a server (DESIGN §8): a ``building`` docker deployment
becomes ``ready`` with its image, or ``failed`` with the reason.

``web/`` stores the bundle and records the deployment; it cannot import the image builder
(``workers.builder``), so this module hands it a ``BuildService`` under
``web.keys.IMAGE_BUILDS`` (``builds_ctx``, when ``Config.run_builder``). A build streams its
log into the deployment row and touches the row while it works, so a server that died
mid-build leaves a stale row that another server adopts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import aiodocker
from aiohttp import web

from papayya import bundles
from papayya.blobstore import BlobStore
from papayya.config import Config
from papayya.readmodels.deployments import Deployment, Deployments
from web import keys
from workers.builder import Builder, BuildError, BuildSpec

log = logging.getLogger(__name__)

REQUIREMENTS: Final = "requirements.txt"
MAX_LOG_CHARS: Final = 200_000
LOG_FLUSH_SECONDS: Final = 0.5
TOUCH_SECONDS: Final = 20.0
STALE_SECONDS: Final = 120.0


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
    """Image builds in the background of this server, a few at a time (``web.keys.ImageBuilds``)."""

    def __init__(self, deployments: Deployments, config: Config, blobs: BlobStore) -> None:
        self.deployments = deployments
        self.config = config
        self.blobs = blobs  # the app's (web.keys.BLOBS): closed by its owner, not here
        self._slots = asyncio.Semaphore(1)  # builds are CPU and disk bound: 2 cores here
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._docker: aiodocker.Docker | None = None

    def submit(self, deployment_id: str) -> None:
        """Build it here, unless it is being built here already."""
        if deployment_id not in self._tasks:
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

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._docker is not None:
            await self._docker.close()


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
    """This server's builder (``Config.run_builder``; after ``web.app.init_app``'s contexts,
    whose event store and blob store it uses). Without one, uploads wait in ``building``
    until a server with a builder adopts them."""
    config = app[keys.CONFIG]
    if not config.run_builder:
        yield
        return
    service = BuildService(app[keys.DEPLOYMENTS], config, app[keys.BLOBS])
    app[BUILDS] = service
    app[keys.IMAGE_BUILDS] = service
    adopting = asyncio.create_task(service.adopt_stale(), name="adopt-stale-builds")
    yield
    adopting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await adopting
    await service.close()

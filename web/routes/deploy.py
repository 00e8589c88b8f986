"""``POST /v1/agents/{id}/deploy``: a bundle in, a deployment out, the image built behind.

The upload is vetted in full (``papayya.bundles``) before anything is written: a hostile or
broken bundle answers 4xx and leaves no blob, row or event behind. An accepted bundle is
stored by its SHA-256 (``keys.BLOBS``) and its deployment answers ``202`` in status
``building``. The image is built behind, by the builder ``server/`` hands this app
(``keys.IMAGE_BUILDS``, ``server.builds``): it streams its log into the deployment row and
ends it ``ready`` with the image, or ``failed`` with the reason.

With ``runtime=process`` (no Docker on this machine) the bundle is unpacked under the data
dir instead and the deployment is ready at once, for this machine's process workers: only for
projects the operator trusts (``PAPAYYA_PROCESS_RUNTIME``), 403 for the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Annotated, Final, Literal

import msgspec
from aiohttp import BodyPartReader, web

from papayya import blobstore, bundles
from papayya.domain import events as ev
from papayya.errors import InvalidInput, PayloadTooLarge
from papayya.readmodels.agents import Agent
from papayya.readmodels.deployments import Deployment, DeploymentOut
from papayya.readmodels.projects import new_id
from web import http, keys
from web.openapi import api
from web.routes import deployments

MAX_FIELD_BYTES: Final = 1000
LIMITS = bundles.Limits()  # what an uploaded bundle may hold
Entrypoint = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class DeployForm(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The multipart fields besides ``file`` (the bundle, a tar.gz). ``requirements.txt`` at
    the bundle's root, if there is one, is installed into the image."""

    # ``python`` is the hosted API's (and the published SDK's default) name of the Docker
    # Python runtime: one meaning, two names.
    runtime: Literal["docker", "python", "process"] = "docker"
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
    response=DeploymentOut, status=202, tag="deployments",
    errors=((403, deployments.FORBIDDEN),),
)  # fmt: skip
async def deploy(request: web.Request) -> web.Response:
    agent = await request.app[keys.AGENTS].find(http.project_id(request), http.path_id(request))
    with tempfile.TemporaryDirectory(prefix="papayya-upload-") as tmp:
        form, bundle, sha256 = await read_upload(request, Path(tmp))
        if form.runtime == "process":
            deployments.require_process_runtime(request, agent.project_id)
        manifest = await asyncio.to_thread(bundles.inspect_bundle, bundle, LIMITS)
        entrypoint = check_entrypoint(form.entrypoint, manifest)
        if form.runtime == "process":
            made = await unpack(request, agent, form, entrypoint, bundle, sha256)
            return http.json(made.out(), 202)  # ready already
        key = f"bundles/{sha256}.tar.gz"
        blobs = request.app[keys.BLOBS]
        if not await blobs.exists(key):
            await blobs.put(key, bundle, sha256)
    created = ev.DeploymentCreated(
        deployment_id=new_id("dep"), project_id=agent.project_id, agent_id=agent.id,
        version=1, runtime="docker", entrypoint=entrypoint,
        agent_function=form.agent_function, source=key, bundle_sha256=sha256,
    )  # fmt: skip
    made = await request.app[keys.DEPLOYMENTS].create(
        agent.project_id, agent.id, created, "building"
    )
    builds = request.app.get(keys.IMAGE_BUILDS)
    if builds is not None:  # else a server with a builder adopts it once stale
        builds.submit(made.deployment_id)
    return http.json(made.out(), 202)


async def unpack(
    request: web.Request,
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
    root = (request.app[keys.CONFIG].data_dir / "deployments").resolve()
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
        return await request.app[keys.DEPLOYMENTS].create(
            agent.project_id, agent.id, created, "ready"
        )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


async def blobs_ctx(app: web.Application) -> AsyncIterator[None]:
    """Where uploaded bundles are kept (``keys.BLOBS``): S3 when configured, else under the
    data dir. The builder reads them back from here."""
    blobs = blobstore.from_config(app[keys.CONFIG])
    app[keys.BLOBS] = blobs
    yield
    await blobs.close()

"""``papayya deploy``: bundle a directory, upload it, follow the image build."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
import click

from papayya import bundles
from papayya.apiclient import ApiClient, error_from
from papayya.errors import NotFound, PapayyaError
from server.cli_api import with_api

REQUIREMENTS = "requirements.txt"
POLL_SECONDS = 1.0


def bundle_files(
    directory: Path, entrypoint: str, requirements: Path | None
) -> list[tuple[PurePosixPath, Path]]:
    """What goes into the bundle: ``directory``'s files, the requirements file as
    ``requirements.txt`` at the root (where the builder looks for it)."""
    files = bundles.collect(directory)
    if requirements is not None:
        files = [f for f in files if f[0] != PurePosixPath(REQUIREMENTS)]
        files.append((PurePosixPath(REQUIREMENTS), requirements))
        files.sort()
    if entrypoint.endswith(".py") and PurePosixPath(entrypoint) not in {f[0] for f in files}:
        raise click.ClickException(f"{entrypoint} is not in {directory} (see --entrypoint)")
    return files


async def ensure_agent(client: ApiClient, slug: str) -> dict[str, Any]:
    try:
        return dict(await client.call("GET", f"/v1/agents/{slug}"))
    except NotFound:
        click.echo(f"creating agent {slug}")
        body = {"name": slug, "slug": slug, "config": {}}
        return dict(await client.call("POST", "/v1/agents", body))


async def _chunks(path: Path, advance: Callable[[int], None]) -> Any:
    with path.open("rb") as f:
        while chunk := f.read(256 * 1024):
            advance(len(chunk))
            yield chunk


async def upload(
    client: ApiClient, agent_id: str, bundle: Path, size: int, fields: dict[str, str]
) -> dict[str, Any]:
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    with click.progressbar(length=size, label="uploading", show_eta=False) as bar:
        form.add_field(
            "file", _chunks(bundle, bar.update), filename="bundle.tar.gz",
            content_type="application/gzip",
        )  # fmt: skip
        url = f"{client.base_url}/v1/agents/{agent_id}/deploy"
        try:
            async with client.session.post(url, data=form) as resp:
                body = await resp.json(content_type=None)
        except aiohttp.ClientConnectionError as exc:
            raise PapayyaError(f"cannot reach {client.base_url}: {exc}") from None
    if resp.status >= 400:
        raise error_from(resp.status, body)
    return dict(body)


async def follow_build(client: ApiClient, deployment_id: str, timeout: float) -> dict[str, Any]:
    """Print the build log as it grows until the deployment is ready or failed."""
    shown = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        deployment = dict(await client.call("GET", f"/v1/deployments/{deployment_id}"))
        log = deployment["build_log"]
        if len(log) > shown:
            click.echo(log[shown:], nl=False)
            shown = len(log)
        if deployment["status"] != "building":
            return deployment
        if loop.time() > deadline:
            raise PapayyaError(f"the build is still running after {timeout:.0f} s")
        await asyncio.sleep(POLL_SECONDS)


def show_dry_run(files: list[tuple[PurePosixPath, Path]], entrypoint: str, runtime: str) -> None:
    total = 0
    for rel, path in files:
        size = path.stat().st_size
        total += size
        click.echo(f"{size:>10}  {rel}")
    has_requirements = any(rel == PurePosixPath(REQUIREMENTS) for rel, _ in files)
    click.echo(f"{len(files)} files, {total} bytes before compression")
    click.echo(f"entrypoint {entrypoint}, runtime {runtime}, requirements: "
               f"{REQUIREMENTS if has_requirements else 'none'}")  # fmt: skip
    click.echo("dry run: nothing was uploaded")


@click.command()
@click.argument(
    "directory", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--agent", "slug", required=True, help="The agent's slug (created if missing).")
@click.option("--entrypoint", default="agent.py", show_default=True,
              help="The agent module: a .py file of DIRECTORY, or a module name.")  # fmt: skip
@click.option("--requirements", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Installed in the image [default: DIRECTORY/requirements.txt].")  # fmt: skip
@click.option("--runtime", type=click.Choice(["docker", "process"]), default="docker",
              show_default=True,
              help="docker: an image; process: run on the server (where the server's "
                   "PAPAYYA_PROCESS_RUNTIME allows the project).")  # fmt: skip
@click.option("--function", "agent_function", help="The @agent to run, if the module has several.")
@click.option("--dry-run", is_flag=True, help="List what would be uploaded, and stop.")
@click.option("--timeout", default=1800.0, show_default=True, help="Seconds to follow the build.")
def deploy(
    directory: Path,
    slug: str,
    entrypoint: str,
    requirements: Path | None,
    runtime: str,
    agent_function: str | None,
    dry_run: bool,
    timeout: float,
) -> None:
    """Bundle DIRECTORY, upload it as the agent's next version, follow the build.

    Leaves out .git, virtualenvs, caches, .env files and build outputs."""
    files = bundle_files(directory, entrypoint, requirements)
    if dry_run:
        show_dry_run(files, entrypoint, runtime)
        return
    fields = {"runtime": runtime, "entrypoint": entrypoint}
    if agent_function:
        fields["agent_function"] = agent_function
    with tempfile.TemporaryDirectory(prefix="papayya-deploy-") as tmp:
        bundle = Path(tmp) / "bundle.tar.gz"
        total = sum(path.stat().st_size for _, path in files)
        with click.progressbar(length=total, label="bundling ", show_eta=False) as bar:
            try:
                bundles.make_bundle(files, bundle, progress=bar.update)
            except PapayyaError as exc:
                raise click.ClickException(exc.message) from None
        size = bundle.stat().st_size
        click.echo(f"bundle: {len(files)} files, {size} bytes")

        async def go(client: ApiClient) -> dict[str, Any]:
            agent = await ensure_agent(client, slug)
            made = await upload(client, agent["id"], bundle, size, fields)
            click.echo(f"deployment {made['id']} version {made['version']}: {made['status']}")
            if made["status"] != "building":
                return made
            return await follow_build(client, made["id"], timeout)

        deployment = with_api(go)
    if deployment["status"] != "ready":
        raise click.ClickException(f"the build failed: {deployment['error_message']}")
    where = f" ({deployment['image']})" if deployment.get("image") else ""
    click.echo(f"deployed {slug} version {deployment['version']}{where}")

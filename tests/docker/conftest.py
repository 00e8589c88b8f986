"""Tests against the Docker engine, registry and S3 that `make services` starts.

Every test here is marked ``docker``; none is skipped when the services are missing: they
fail, since CI runs `make services` first. The sample agent's image is built once per
session (``sample_image``)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from papayya import bundles
from tests.support.db import run_sync
from tests.support.docker_cloud import SAMPLE, DockerCloud, running_docker_cloud
from tests.support.services import services
from workers.builder import Builder, BuildSpec


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.docker)
            # The first test of a fresh machine builds images (pip, venv, push): minutes.
            item.add_marker(pytest.mark.timeout(600))


@pytest.fixture(scope="session")
def services_env() -> dict[str, str]:
    env = services()

    async def ping() -> None:
        async with aiodocker.Docker() as docker:
            await docker.version()

    try:
        run_sync(ping())
    except Exception as exc:
        pytest.fail(f"the Docker engine is not reachable ({exc}): run `make services`")
    return env


@pytest.fixture(autouse=True)
def _aws_credentials(services_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        if name in services_env:
            monkeypatch.setenv(name, services_env[name])


@pytest.fixture(scope="session")
def sample_image(services_env: dict[str, str]) -> str:
    """The sample agent (openai SDK, requirements.txt, a probe module) built and pushed."""

    async def build() -> str:
        with tempfile.TemporaryDirectory(prefix="papayya-sample-") as tmp:
            bundle = Path(tmp) / "bundle.tar.gz"
            bundles.make_bundle(bundles.collect(SAMPLE), bundle)
            spec = BuildSpec(
                deployment_id="dep_session", agent="sample-agent", version=int(time.time()),
                entrypoint="agent.py", bundle=bundle, requirements="requirements.txt",
            )  # fmt: skip
            log: list[str] = []

            async def sink(text: str) -> None:
                log.append(text)

            async with aiodocker.Docker() as docker:
                builder = Builder(
                    docker, base_image=services_env["PAPAYYA_BASE_IMAGE"],
                    registry=services_env["PAPAYYA_REGISTRY"],
                )  # fmt: skip
                try:
                    return await builder.build(spec, sink)
                except Exception as exc:
                    raise AssertionError(f"{exc}\n{''.join(log)[-4000:]}") from exc

    return run_sync(build())


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    async with aiodocker.Docker() as client:
        yield client


@pytest.fixture
async def cloud(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, services_env: dict[str, str]
) -> AsyncIterator[DockerCloud]:
    """The control plane with a Docker-runtime worker, for every module here."""
    async with running_docker_cloud(dsn, monkeypatch, tmp_path, services_env) as running:
        yield running

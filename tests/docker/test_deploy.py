"""``papayya deploy`` end to end: the CLI bundles the sample agent, the server stores the bundle
in S3, builds the image, pushes it to the registry; a run then pulls it and completes in a
container through the gateway."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import aiodocker
import aiohttp

from papayya import bundles
from papayya.blobstore import S3BlobStore
from papayya.domain import events as ev
from server.builds import BUILDS
from tests.support.docker_cloud import SAMPLE, DockerCloud
from web import keys


async def papayya_cli(cloud: DockerCloud, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env |= {"PAPAYYA_BASE_URL": cloud.url, "PAPAYYA_API_KEY": cloud.key}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 600)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def registry_tags(registry: str, repository: str) -> list[str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{registry}/v2/{repository}/tags/list") as resp,
    ):
        return list((await resp.json()).get("tags") or []) if resp.status == 200 else []


async def test_deploy_builds_pushes_and_a_run_completes_in_a_container(
    cloud: DockerCloud, services_env: dict[str, str], docker: aiodocker.Docker
) -> None:
    code, out = await papayya_cli(cloud, "deploy", str(SAMPLE), "--agent", "weather-bot")
    assert code == 0, out
    assert "creating agent weather-bot" in out and "Successfully built" in out
    registry = services_env["PAPAYYA_REGISTRY"]
    image = f"{registry}/papayya/weather-bot:1"
    assert f"deployed weather-bot version 1 ({image})" in out

    status, listed = await cloud.call("GET", "/v1/agents/weather-bot/deployments")
    (deployment,) = listed
    assert deployment["status"] == "ready" and deployment["image"] == image
    assert "pushing" in deployment["build_log"] and deployment["error_message"] is None
    assert "1" in await registry_tags(registry, "papayya/weather-bot")
    blobs = S3BlobStore(services_env["PAPAYYA_S3_BUCKET"], services_env["PAPAYYA_S3_ENDPOINT"])
    try:
        pool = cloud.app[keys.STORE].pool
        stored = await pool.fetchrow(
            "SELECT source, bundle_sha256 FROM deployments WHERE deployment_id = $1",
            deployment["id"],
        )
        assert stored["source"] == f"bundles/{stored['bundle_sha256']}.tar.gz"
        assert await blobs.exists(stored["source"])
    finally:
        await blobs.close()

    # The worker's engine has no copy: the runtime pulls the image from the registry.
    await docker.images.delete(image, force=True)
    status, run = await cloud.call(
        "POST", "/v1/agents/weather-bot/runs", {"input": {"question": "weather in Paris?"}}
    )
    assert status == 201, run
    state = await cloud.wait(run["id"], 120)
    assert state.status == "completed", state
    assert [s.step_type for s in state.steps] == ["tool_call", "checkpoint", "response"]
    assert state.output["counted"] == 3 and state.output["answer"]
    assert sum(s.usage.output_tokens for s in state.steps) == 40
    assert state.steps[0].usage.cost_micro_usd > 0 and cloud.fake.stats.total == 2
    await docker.images.inspect(image)  # pulled


async def test_dry_run_lists_the_bundle_and_uploads_nothing(cloud: DockerCloud) -> None:
    code, out = await papayya_cli(cloud, "deploy", str(SAMPLE), "--agent", "x", "--dry-run")
    assert code == 0, out
    assert "agent.py" in out and "requirements.txt" in out and "nothing was uploaded" in out
    status, _ = await cloud.call("GET", "/v1/agents/x")
    assert status == 404


async def test_a_failed_build_is_reported_with_its_log(cloud: DockerCloud, tmp_path: Path) -> None:
    source = tmp_path / "broken"
    shutil.copytree(SAMPLE, source)
    # A version that exists nowhere: pip cannot resolve it to a wheel.
    (source / "requirements.txt").write_text("openai==0.0.0.1\n")
    code, out = await papayya_cli(cloud, "deploy", str(source), "--agent", "broken-bot")
    assert code == 1, out
    assert "the build failed: pip could not resolve requirements.txt" in out
    _, listed = await cloud.call("GET", "/v1/agents/broken-bot/deployments")
    (deployment,) = listed
    assert deployment["status"] == "failed" and deployment["image"] is None
    assert "openai==0.0.0.1" in deployment["build_log"]
    assert "error: pip could not resolve" in deployment["build_log"]


async def test_a_build_that_lost_its_server_is_taken_over(
    cloud: DockerCloud, tmp_path: Path
) -> None:
    """A server died mid-build: its deployment stays `building`, untouched; another server
    claims it once stale, fetches the bundle from S3 and finishes it."""
    service = cloud.app[BUILDS]
    store = cloud.app[keys.STORE]
    agent = await cloud.agent("orphan-bot")
    bundle = tmp_path / "bundle.tar.gz"
    sha = bundles.make_bundle(bundles.collect(SAMPLE), bundle)
    await service.blobs.put(f"bundles/{sha}.tar.gz", bundle, sha)
    created = ev.DeploymentCreated(
        deployment_id="dep_orphan", project_id=agent.project_id, agent_id=agent.id, version=1,
        runtime="docker", entrypoint="agent.py", source=f"bundles/{sha}.tar.gz",
        bundle_sha256=sha,
    )  # fmt: skip
    # ...and nobody builds it
    await cloud.app[keys.DEPLOYMENTS].create(agent.project_id, agent.id, created, "building")
    assert await service.adopt_once() == []  # fresh: its builder may still be at work
    await store.pool.execute(
        "UPDATE deployments SET updated_at = now() - interval '1 hour'"
        " WHERE deployment_id = 'dep_orphan'"
    )
    assert await service.adopt_once() == ["dep_orphan"]
    assert await service.adopt_once() == []  # claimed: not taken twice
    await service.wait("dep_orphan")
    _, body = await cloud.call("GET", "/v1/deployments/dep_orphan")
    assert body["status"] == "ready" and body["image"].endswith("/papayya/orphan-bot:1")

"""The Docker runtime: isolation seen from ``docker inspect`` and from inside the container,
a killed container's run resumed by a new one, and cancellation."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from tests.support.docker_cloud import DockerCloud, containers_of, running_docker_cloud, wait_for
from tests.support.gateway import PROVIDER_KEY
from workers.builder import AGENT_UID
from workers.docker import INSTALLATION_LABEL, DockerRuntime, container_config
from workers.runtime import Launch, Limits

LIMITS = Limits(memory_mb=256, cpus=0.5, pids=64)


@pytest.fixture
async def quiet_cloud(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, services_env: dict[str, str]
) -> AsyncIterator[DockerCloud]:
    """No worker: the test drives the runtime itself."""
    async with running_docker_cloud(
        dsn, monkeypatch, tmp_path, services_env, worker=False
    ) as running:
        yield running


async def test_the_container_is_isolated(
    quiet_cloud: DockerCloud, sample_image: str, docker: aiodocker.Docker
) -> None:
    cloud = quiet_cloud
    agent = await cloud.agent("probe")
    deployment = await cloud.image_deployment(agent, sample_image, "probe.py")
    task = {"secret": PROVIDER_KEY, "api_port": cloud.port, "linger": 2}
    state, token = await cloud.running_run(agent, task)
    launch = Launch(
        run_id=state.run_id, attempt=1, deployment=deployment, token=token,
        control_url=cloud.url, control_socket=cloud.socket, heartbeat_seconds=1,
        grace_seconds=2, limits=LIMITS,
    )  # fmt: skip
    runtime = DockerRuntime()
    try:
        handle = await runtime.start(launch)
        info = await handle.container.show()
        code = await handle.wait()
    finally:
        await runtime.close()
    host, config = info["HostConfig"], info["Config"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert config["User"] == f"{AGENT_UID}:{AGENT_UID}"
    assert host["Memory"] == 256 * 1024 * 1024 and host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 64
    assert "/tmp" in host["Tmpfs"]
    assert [m["Destination"] for m in info["Mounts"]] == ["/run/papayya/control.sock"]
    assert not any(PROVIDER_KEY in entry for entry in config["Env"])

    assert code == 0, handle.output()
    run = await cloud.wait(state.run_id, 10)
    assert run.status == "completed", handle.output()
    seen: dict[str, Any] = run.output
    assert seen["uid"] == AGENT_UID and seen["gid"] == AGENT_UID
    assert seen["secret_in_env"] == []
    assert not any(name.endswith("_API_KEY") and name != "OPENAI_API_KEY" and
                   name != "ANTHROPIC_API_KEY" for name in seen["env"])  # fmt: skip
    assert seen["routes"] == [] and seen["interfaces"] == ["lo"]
    assert "ConnectionRefusedError" in seen["host_api"]  # the host's API port is not there
    assert "Read-only file system" in seen["write_root"]
    assert seen["write_tmp"] == "written"
    assert seen["cap_eff"] == "0000000000000000" and seen["no_new_privs"] == "1"
    assert seen["cwd"] == "/tmp"
    assert await containers_of(docker, state.run_id) == []  # removed once it exited


async def test_a_killed_container_is_resumed_by_a_new_one_without_repeating_steps(
    cloud: DockerCloud, sample_image: str, docker: aiodocker.Docker
) -> None:
    agent = await cloud.agent("weather")
    await cloud.image_deployment(agent, sample_image, "agent.py")
    status, run = await cloud.call(
        "POST", "/v1/agents/weather/runs", {"input": {"question": "Paris?", "pause": True}}
    )
    assert status == 201, run

    async def paused() -> Any:
        state = await cloud.runs.load(run["id"])
        if [s.step_type for s in state.steps] == ["tool_call", "checkpoint"]:
            found = await containers_of(docker, run["id"])
            return found[0] if found else None
        return None

    container = await wait_for(paused, 90, "the agent to pause after its checkpoint")
    assert cloud.fake.stats.total == 1
    await container.kill(signal="SIGKILL")

    state = await cloud.wait(run["id"], 90)
    assert state.status == "completed", state
    assert state.attempt == 2
    assert [s.step_type for s in state.steps] == ["tool_call", "checkpoint", "response"]
    assert cloud.fake.stats.total == 2  # the first model call was answered from the recording
    assert state.output["counted"] == 3
    assert state.steps[0].usage.cost_micro_usd > 0
    await wait_for(lambda: _none_left(docker, run["id"]), 20, "the containers to be removed")


async def _none_left(docker: aiodocker.Docker, run_id: str) -> bool:
    return not await containers_of(docker, run_id)


async def test_cancelling_a_run_stops_and_removes_its_container(
    cloud: DockerCloud, sample_image: str, docker: aiodocker.Docker
) -> None:
    agent = await cloud.agent("weather")
    await cloud.image_deployment(agent, sample_image, "agent.py")
    _, run = await cloud.call(
        "POST", "/v1/agents/weather/runs", {"input": {"question": "Oslo?", "pause": True}}
    )

    async def paused() -> bool:
        state = await cloud.runs.load(run["id"])
        return len(state.steps) == 2 and bool(await containers_of(docker, run["id"]))

    await wait_for(paused, 90, "the agent to pause")
    status, body = await cloud.call("POST", f"/v1/runs/{run['id']}/cancel", {})
    assert status in (200, 202), body
    state = await cloud.wait(run["id"], 30)
    assert state.status == "cancelled"
    await wait_for(lambda: _none_left(docker, run["id"]), 20, "the container to be removed")


def test_the_container_config_holds_nothing_but_the_runs_own() -> None:
    from workers.runtime import Deployment

    deployment = Deployment("dep_1", "prj", "agt", 3, "docker", "agent.py", "main", None, "i:3")
    launch = Launch(
        run_id="run_1", attempt=2, deployment=deployment, token="tok", control_url="http://x",
        control_socket=Path("/srv/papayya.sock"), limits=Limits(memory_mb=128, pids=10),
    )  # fmt: skip
    config = container_config(launch)
    env = dict(entry.split("=", 1) for entry in config["Env"])
    assert env == {
        "PAPAYYA_RUNTIME_SOCKET": "/run/papayya/control.sock",
        "PAPAYYA_RUN_TOKEN": "tok",
        "PAPAYYA_AGENT_MODULE": "/app/agent.py",
        "PAPAYYA_AGENT_FUNCTION": "main",
        "PAPAYYA_HEARTBEAT_SECONDS": "15.0",
        "PAPAYYA_GRACE_SECONDS": "10.0",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
    }
    assert config["HostConfig"]["Mounts"][0]["Source"] == "/srv/papayya.sock"
    assert "NanoCpus" not in config["HostConfig"]
    with pytest.raises(ValueError, match="Unix socket"):
        container_config(Launch("r", 1, deployment, "t", "http://x"))


def test_the_projects_secrets_are_in_the_containers_environment_under_the_runtimes_own() -> None:
    from workers.runtime import Deployment

    deployment = Deployment("dep_1", "prj", "agt", 3, "docker", "agent.py", None, None, "i:3")
    launch = Launch(
        run_id="run_1", attempt=1, deployment=deployment, token="tok", control_url="http://x",
        control_socket=Path("/srv/papayya.sock"),
        secrets={"API_TOKEN": "s3cret", "HOME": "/elsewhere"},
    )  # fmt: skip
    env = dict(entry.split("=", 1) for entry in container_config(launch)["Env"])
    assert env["API_TOKEN"] == "s3cret" and env["HOME"] == "/tmp"
    assert env["PAPAYYA_RUN_TOKEN"] == "tok"
    assert "s3cret" not in repr(launch)


async def test_containers_of_attempts_that_are_over_are_reaped(
    quiet_cloud: DockerCloud, sample_image: str, docker: aiodocker.Docker
) -> None:
    """A worker that died leaves its containers; any worker of the same installation removes
    those whose attempt is no longer the run's running one, and leaves the others alone:
    running attempts, and every container of another installation (or of none)."""
    mine, theirs = "ins_reap_mine", "ins_reap_theirs"
    labels = {"papayya.run": "run_reap_test", "papayya.attempt": "1"}
    config = {"Image": sample_image, "Cmd": ["sleep", "60"],
              "HostConfig": {"NetworkMode": "none"}}  # fmt: skip
    made = {
        name: await docker.containers.create(
            {**config, "Labels": {**labels, **extra}}, name=f"papayya-reap-{name}"
        )
        for name, extra in {
            "stale": {INSTALLATION_LABEL: mine},
            "kept": {INSTALLATION_LABEL: mine, "papayya.run": "run_reap_kept"},
            "theirs": {INSTALLATION_LABEL: theirs},
            "unlabelled": {},
        }.items()
    }
    runtime = DockerRuntime(docker, installation=mine)
    try:

        async def current(run_id: str, attempt: int) -> bool:
            return run_id == "run_reap_kept"

        assert await DockerRuntime(docker).reap(current) == 0  # no installation: not its own
        assert await runtime.reap(current) == 1
        names = {c._container["Names"][0] for c in await docker.containers.list(all=True)}
        assert "/papayya-reap-stale" not in names
        assert {"/papayya-reap-kept", "/papayya-reap-theirs", "/papayya-reap-unlabelled"} <= names
    finally:
        for container in made.values():
            with contextlib.suppress(aiodocker.DockerError):
                await container.delete(force=True)

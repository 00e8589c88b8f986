"""Project secrets reach an agent in a container (docs/security.md, "Project secrets"): the
worker opens them at launch and the Docker runtime puts them into the container's
environment (another project's stay out: tests/cloud/test_project_secrets.py)."""

from __future__ import annotations

from tests.support.docker_cloud import DockerCloud

VALUE = "a-docker-project-secret-7f3a"


async def test_a_container_agent_sees_its_projects_secret(
    cloud: DockerCloud, sample_image: str
) -> None:
    agent = await cloud.agent("probe")
    await cloud.image_deployment(agent, sample_image, "probe.py")
    path = f"/v1/projects/{agent.project_id}/secrets"
    status, made = await cloud.call("POST", path, {"name": "PROBE_SECRET", "value": VALUE})
    assert status == 200, made
    status, body = await cloud.call(
        "POST", f"/v1/agents/{agent.id}/runs",
        {"input": {"secret": VALUE, "api_port": cloud.port}},
    )  # fmt: skip
    assert status == 201, body
    run = await cloud.wait(body["id"])
    assert run.status == "completed", (run.error_code, run.error_message)
    # The probe names the variables whose value holds its input's "secret": ours alone.
    assert run.output["secret_in_env"] == ["PROBE_SECRET"]

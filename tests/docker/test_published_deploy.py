"""The published CLI (``papayya deploy`` and ``papayya run`` of ``papayya==0.2.0``) ships an
agent written for the hosted product to our server: the bundle is built into an image (its
``runtime: python`` is our Docker runtime), the triggers of its ``papayya.yaml`` are
reconciled, and a run of it completes in a container."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.docker_cloud import DockerCloud
from tests.support.published import Published, published_venv

# An agent as the hosted product's quickstart writes it: the published decorator, with keywords.
AGENT_FILE = """
from papayya import agent


@agent(name="Echo Bot", model="gpt-4o-mini", instructions="Repeat the input.", max_steps=5)
def echo(task):
    return {"echoed": task}
"""

# The hosted product's declarative triggers, which `papayya deploy` reconciles after the upload.
TRIGGERS = """
version: 1
envs:
  prod:
    agents:
      echo-bot:
        schedules:
          - cron: "0  9 * * 1-5"
        webhooks:
          - name: on-push
            secret_env: ECHO_HOOK_SECRET
"""


async def test_published_deploy_then_run_completes_in_a_container(
    cloud: DockerCloud, tmp_path: Path
) -> None:
    project = tmp_path / "my-agent"
    project.mkdir()
    (project / "agent.py").write_text(AGENT_FILE)
    (project / "papayya.yaml").write_text(TRIGGERS)
    venv = await asyncio.to_thread(published_venv)
    published = Published(venv, cloud.url, cloud.key, project)
    _, projects = await cloud.call("GET", "/v1/projects")
    project_id = projects[0]["id"]

    code, out, err = await published.cli("deploy", PAPAYYA_PROJECT_ID=project_id)
    assert code == 0, err + out
    assert "Found 1 agent(s): Echo Bot" in out and "Creating agent: echo-bot" in out
    assert "Build complete! Image: " in out and "Deployed echo-bot" in out, out
    _, listed = await cloud.call("GET", "/v1/agents/echo-bot/deployments")
    (deployment,) = listed
    assert deployment["status"] == "ready" and deployment["runtime"] == "docker"
    assert f"Image: {deployment['image']}" in out
    _, agent = await cloud.call("GET", "/v1/agents/echo-bot")
    assert agent["config"]["model"] == "gpt-4o-mini"
    # The triggers of papayya.yaml: made, the webhook's secret and URL shown once.
    assert "Reconciling triggers for env 'prod'" in out and "Applied 2 of 2 operations." in out
    _, (schedule,) = await cloud.call("GET", "/v1/agents/echo-bot/schedules")
    assert schedule["cron_expression"] == "0  9 * * 1-5" and schedule["timezone"] == "UTC"
    _, (hook,) = await cloud.call("GET", "/v1/agents/echo-bot/webhooks")
    assert hook["name"] == "on-push" and f"URL:    {cloud.url}/v1/webhooks/" in out

    # Deploying again finds the agent by its slug, ships version 2, and changes no trigger.
    code, out, err = await published.cli("deploy", PAPAYYA_PROJECT_ID=project_id)
    assert code == 0, err + out
    assert f"Found existing agent: {agent['id']} (echo-bot)" in out and "Version: 2" in out
    assert "No changes to apply." in out, out

    code, out, err = await published.cli("run", "echo-bot", "hello", PAPAYYA_PROJECT_ID=project_id)
    assert code == 0, err + out
    assert "Final status: completed" in out, out
    run_id = out.split("Run triggered: ", 1)[1].split()[0]
    state = await cloud.wait(run_id)
    assert state.status == "completed" and state.output == {"echoed": {"message": "hello"}}

"""The image builder's pure parts: wheel platforms, the Dockerfile and names. That the runtime
files an image carries need only the standard library is the layer rule's
(tests/unit/test_layers.py)."""

from __future__ import annotations

from workers.builder import (
    Target,
    agent_module,
    dockerfile,
    image_name,
)


def test_wheel_platforms_follow_the_images_libc() -> None:
    glibc = Target("3.11", "x86_64", "glibc 2.36").platforms()
    assert glibc[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in glibc
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(glibc)
    old = Target("3.10", "aarch64", "glibc 2.12").platforms()
    assert "manylinux2014_aarch64" not in old and "manylinux2010_aarch64" in old
    assert Target("3.12", "x86_64", "").platforms()[0] == "musllinux_1_2_x86_64"


def test_image_names() -> None:
    assert image_name("127.0.0.1:5000", "weather-bot", 3) == "127.0.0.1:5000/papayya/weather-bot:3"
    assert image_name("reg.example/", "a", 1) == "reg.example/papayya/a:1"
    assert image_name(None, "a", 1) == "papayya/a:1"
    assert agent_module("src/agent.py") == "/app/src/agent.py"
    assert agent_module("pkg.agent") == "pkg.agent"


def test_the_dockerfile_installs_offline_and_runs_as_a_user() -> None:
    text = dockerfile("base:1", "agent.py", with_requirements=True)
    assert text.startswith("FROM base:1 AS deps\n")
    assert "--no-index" in text and "--find-links /opt/papayya/wheels" in text
    assert "COPY --from=deps /opt/papayya/venv /opt/papayya/venv" in text
    assert "USER 10001:10001" in text
    assert 'PAPAYYA_AGENT_MODULE="/app/agent.py"' in text
    assert text.rstrip().endswith('ENTRYPOINT ["python3", "-m", "papayya.runtime"]')
    plain = dockerfile("base:1", "agent.py", with_requirements=False)
    assert "AS deps" not in plain and "venv" not in plain

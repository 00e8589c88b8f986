"""The image builder's pure parts: wheel platforms, the Dockerfile, names, and the runtime
files an image carries (standard library only, so any Python image can run them)."""

from __future__ import annotations

import ast
import sys

from workers.builder import (
    Target,
    agent_module,
    dockerfile,
    image_name,
    runtime_files,
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


def test_the_runtime_files_need_nothing_but_the_standard_library() -> None:
    files = runtime_files()
    names = {rel.as_posix() for _, rel in files}
    assert {"__init__.py", "agentapi.py", "runtime/__main__.py", "runtime/main.py"} <= names
    modules = {"papayya." + n.removesuffix(".py").replace("/", ".") for n in names}
    modules = {m.removesuffix(".__init__") for m in modules} | {"papayya"}
    for source, rel in files:
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported = [node.module]
            else:
                continue
            for name in imported:
                top = name.split(".")[0]
                if top == "papayya":
                    # The SDK's client is imported lazily by papayya/__init__ and never by
                    # the runtime: everything else must be copied into the image.
                    assert name in modules or name == "papayya.sdk", f"{rel} imports {name}"
                else:
                    assert top in sys.stdlib_module_names or top == "__future__", (
                        f"{rel} imports {name}, which is not in the standard library"
                    )

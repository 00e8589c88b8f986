"""The process runtime is the operator's choice, not the tenant's (docs/security.md, issue 14
§1): a project the setting does not name can neither register a module on the server nor
deploy a bundle to run as a process (403, nothing written), a worker refuses such a run even
if it was registered before the setting changed, an uploaded entrypoint resolves inside its
bundle, and an allowed project's agent, run by a root ``papayya server``, finds none of the
server's secrets in ``/proc``, the data directory or the database's address."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from fakellm.testing import running_fake_in_thread
from papayya.domain.state import RunState
from papayya.processruntime import SETTING, ProcessRuntimePolicy
from server.cli import main as cli
from tests.support.cloud import Cloud, agent_workspace, running_cloud
from tests.support.process_runtime import (
    Tenant,
    bundle,
    call,
    deploy,
    papayya_server,
    rows,
    server_env,
    two_tenants,
    wait_for_run,
)
from tests.support.serving import serving
from workers.hardening import SECRETS
from workers.worker import Worker

pytestmark = pytest.mark.timeout(240)

AGENT = b"""
from papayya import agent

@agent
def hello(task):
    return {"hello": task.get("name")}
"""
RECORDING = """
import os
from papayya import agent

@agent
def hello(task):
    with open(os.environ["SIDE_EFFECTS"], "a") as f:
        f.write("ran\\n")
    return {"hello": task.get("name")}
"""

# What a hostile tenant's agent does with a process of its own on the server: read every
# process's environment and command line, the server's data directory and the database's
# socket, and report whatever looks like a secret.
SNOOP = rb"""
import glob
import json
import os
import re
import socket
import struct

from papayya import agent

SECRETISH = re.compile(
    rb"[A-Za-z_]*(?:KEY|SECRET|TOKEN|PASSWORD|URL)=[^\x00\n]*|cpk_[\w-]+|sk-[\w-]+"
    rb"|postgres(?:ql)?://[^\s\x00'\"]+|redis://[^\s\x00'\"]+"
)


def grab(path, found):
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as exc:
        found["denied"].append(path)
        return
    found["read"].append(path)
    found["hits"] += [m.decode(errors="replace") for m in SECRETISH.findall(data)]


def talk(address, hello):
    # Connect and say hello: what came back, or the error.
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    try:
        with socket.socket(family) as s:
            s.settimeout(5)
            s.connect(address)
            s.sendall(hello)
            return "answered: " + s.recv(1 << 16).decode(errors="replace")
    except OSError as exc:
        return f"error: {exc!r}"


PARAMS = b"user\x00postgres\x00database\x00postgres\x00\x00"
POSTGRES_HELLO = struct.pack("!ii", 8 + len(PARAMS), 196608) + PARAMS


def server_secrets():
    # Trust auth: as the superuser, the run-token key, if asyncpg can connect.
    try:
        import asyncio
        import asyncpg
    except ImportError as exc:
        return f"error: {exc!r}"

    async def read(dsn):
        connection = await asyncpg.connect(dsn, timeout=5)
        try:
            return [bytes(r[0]).hex() for r in await connection.fetch(
                "SELECT value FROM server_secrets")]
        finally:
            await connection.close()

    found = {}
    for dsn in ("postgresql://postgres@127.0.0.1:5432/postgres",
                "postgresql://postgres@/postgres?host=/var/run/postgresql"):
        try:
            found[dsn] = "answered: " + repr(asyncio.run(read(dsn)))
        except Exception as exc:
            found[dsn] = f"error: {exc!r}"
    return found


def gateway():
    # The model call every agent may make: through the gateway, on the run token.
    from openai import OpenAI

    answer = OpenAI().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    return answer.choices[0].message.content


@agent
def snoop(task):
    found = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
             "read": [], "denied": [], "hits": [], "postgres": {}}
    for pattern in ("/proc/[0-9]*/environ", "/proc/[0-9]*/cmdline"):
        for path in glob.glob(pattern):
            grab(path, found)
    found["hits"] += [f"{k}={v}" for k, v in os.environ.items()]
    for root, dirs, files in os.walk(task["data_dir"],
                                     onerror=lambda e: found["denied"].append(e.filename)):
        for name in files:
            grab(os.path.join(root, name), found)
    for address in ("/var/run/postgresql/.s.PGSQL.5432", "/run/postgresql/.s.PGSQL.5432",
                    ("127.0.0.1", 5432), ("localhost", 5432)):
        found["postgres"][str(address)] = talk(address, POSTGRES_HELLO)
    found["redis"] = {str(a): talk(a, b"PING\r\n") for a in (("127.0.0.1", 6379),)}
    found["asyncpg"] = server_secrets()
    found["gateway"] = gateway()
    found["parent"] = f"/proc/{os.getppid()}/environ"  # its fork server: the same uid
    found["hits"] = sorted(set(found["hits"]))
    with open(task["report"], "w") as f:  # whatever it found, however long
        json.dump(found, f)
    return {"uid": found["uid"], "hits": len(found["hits"])}
"""


async def agent_in(http: aiohttp.ClientSession, base: str, tenant: Any, slug: str) -> None:
    status, body = await call(
        http, "POST", f"{base}/v1/agents", tenant, {"name": slug, "slug": slug, "config": {}}
    )
    assert status == 201, body


async def nothing_written(dsn: str, data_dir: Path) -> None:
    assert await rows(dsn, "SELECT 1 FROM deployments") == []
    assert await rows(dsn, "SELECT 1 FROM events WHERE category = 'deployment'") == []
    unpacked = data_dir / "deployments"
    assert not unpacked.exists() or not any(unpacked.iterdir())


def refused(status: int, body: Any) -> None:
    assert status == 403, body
    assert body["error"]["code"] == "process_runtime_not_allowed"
    assert SETTING in body["error"]["message"]


@pytest.mark.parametrize("setting", ["off", "projects:{a}"])
async def test_a_project_the_setting_does_not_name_gets_403_and_nothing_is_written(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, setting: str
) -> None:
    a, b = await two_tenants(dsn)
    policy = ProcessRuntimePolicy.parse(setting.format(a=a.project_id))
    module = tmp_path / "agent.py"
    module.write_bytes(AGENT)
    data_dir = tmp_path / "data"
    async with (
        serving(dsn, monkeypatch, process_runtime=policy, data_dir=data_dir) as api,
        aiohttp.ClientSession() as http,
    ):
        await agent_in(http, api.url, b, "bot")
        # A module already on the server, by path or by module name.
        for entrypoint in (str(module), "server.cli", "os"):
            status, body = await call(
                http, "POST", f"{api.url}/v1/agents/bot/deployments", b,
                {"entrypoint": entrypoint},
            )  # fmt: skip
            refused(status, body)
        # An uploaded bundle asking for the process runtime.
        status, body = await deploy(
            http, api.url, b, "bot", bundle({"agent.py": AGENT}), runtime="process"
        )
        refused(status, body)
        await nothing_written(dsn, data_dir)
        if policy.mode == "projects":  # the project it names is allowed, through the API
            await agent_in(http, api.url, a, "bot")
            status, body = await call(
                http, "POST", f"{api.url}/v1/agents/bot/deployments", a,
                {"entrypoint": str(module)},
            )  # fmt: skip
            assert status == 201, body
            status, body = await deploy(
                http, api.url, a, "bot", bundle({"agent.py": AGENT}), runtime="process"
            )
            assert status == 202 and body["status"] == "ready", body


async def test_papayya_agents_register_says_which_setting_refused_it(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = tmp_path / "agent.py"
    module.write_bytes(AGENT)
    async with serving(dsn, monkeypatch, data_dir=tmp_path / "data") as api:  # off: the default
        env = {**os.environ, "PAPAYYA_BASE_URL": api.url, "PAPAYYA_API_KEY": api.key}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "agents", "register", str(module),
            "--agent", "bot", env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1, out
    assert b"process runtime is not enabled" in out and SETTING.encode() in out, out
    assert await rows(dsn, "SELECT 1 FROM deployments") == []


@pytest.mark.parametrize(
    ("files", "links", "entrypoint", "says"),
    [
        ({"agent.py": AGENT}, {}, "../agent.py", "relative path"),
        ({"agent.py": AGENT}, {}, "/etc/passwd.py", "relative path"),
        ({"agent.py": AGENT}, {}, "./../../agent.py", "relative path"),
        ({"agent.py": AGENT}, {}, "sub\\agent.py", "relative path"),
        ({"agent.py": AGENT}, {"alias.py": "agent.py"}, "alias.py", "not a file of the bundle"),
        ({"agent.py": AGENT}, {"out.py": "../../../etc/x.py"}, "out.py", "outside the bundle"),
        ({"agent.py": AGENT}, {}, "os", "not a module of the bundle"),
        ({"agent.py": AGENT}, {}, "server.cli", "not a module of the bundle"),
        ({"pkg/mod.py": AGENT}, {"lib": "pkg"}, "lib.mod", "not a module of the bundle"),
    ],
)
async def test_an_uploaded_entrypoint_resolves_inside_its_bundle(
    dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    files: dict[str, bytes],
    links: dict[str, str],
    entrypoint: str,
    says: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "data"
    async with (
        serving(
            dsn, monkeypatch, process_runtime=ProcessRuntimePolicy("all"), data_dir=data_dir,
            run_builder=False,
        ) as api,
        aiohttp.ClientSession() as http,
    ):  # fmt: skip
        tenant = Tenant("", api.key)
        await agent_in(http, api.url, tenant, "bot")
        for runtime in ("docker", "process"):
            status, body = await deploy(
                http, api.url, tenant, "bot", bundle(files, links), runtime=runtime,
                entrypoint=entrypoint,
            )  # fmt: skip
            assert status == 400, (runtime, body)
            assert says in body["error"]["message"], body
        await nothing_written(dsn, data_dir)
        blobs = data_dir / "blobs"
        assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))
        # A module of the bundle, by its dotted name, is accepted.
        status, body = await deploy(
            http, api.url, tenant, "bot", bundle({"pkg/__init__.py": b"", "pkg/mod.py": AGENT}),
            runtime="docker", entrypoint="pkg.mod",
        )  # fmt: skip
        assert status == 202, body


async def test_the_worker_refuses_a_process_run_the_setting_no_longer_allows(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Registered while allowed, then the operator narrowed the setting: the run fails with
    its own code and the agent never starts."""
    async with running_cloud(dsn, monkeypatch, tmp_path, worker=False) as cloud:
        await cloud.register("bot", RECORDING)
        narrowed = ProcessRuntimePolicy.parse("projects:proj_someone_else")
        run_id = await cloud.start("bot", input={"name": "x"})
        state = await run_with(cloud.in_process_worker(process_runtime=narrowed), cloud, run_id)
        assert state.status == "failed" and state.error_code == "process_runtime_not_allowed"
        assert SETTING in (state.error_message or "")
        assert cloud.side_effects() == []
        # The control: where the setting allows it, the same deployment's agent runs.
        again = await cloud.start("bot", input={"name": "y"})
        state = await run_with(cloud.in_process_worker(), cloud, again)
        assert state.status == "completed", (state.error_code, state.error_message)
        assert cloud.side_effects() == ["ran"]


async def run_with(worker: Worker, cloud: Cloud, run_id: str) -> RunState:
    running = asyncio.create_task(worker.run())
    try:
        return await cloud.wait(run_id, 60)
    finally:
        worker.stop()
        await running


@pytest.mark.parametrize("value", ["on", "projects:", "projects:a b", "ALL", "projects:a,,b"])
def test_a_bad_setting_is_refused_at_start_up(value: str) -> None:
    with pytest.raises(ValueError, match=SETTING):
        ProcessRuntimePolicy.parse(value)
    result = CliRunner().invoke(cli, ["worker", "--burst"], env={SETTING: value})
    assert result.exit_code == 1 and SETTING in result.output, result.output


def test_drop_secrets_wipes_them_from_the_environment_and_from_proc() -> None:
    value = "postgresql://u:" + secrets.token_hex(12) + "@db/x"
    script = (
        "import os; from workers.hardening import drop_secrets;"
        "print(drop_secrets()); assert 'PAPAYYA_DATABASE_URL' not in os.environ;"
        "print(open('/proc/self/environ', 'rb').read())"
    )
    env = {**os.environ, "PAPAYYA_DATABASE_URL": value, "PAPAYYA_DATA_DIR": "/x/kept"}
    shown = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "PAPAYYA_DATABASE_URL" in shown.splitlines()[0]
    assert value not in shown and "/x/kept" in shown
    assert "PAPAYYA_BOOTSTRAP_API_KEY" in SECRETS and "PAPAYYA_OPENAI_API_KEY" in SECRETS


def test_a_hardened_process_is_not_dumpable() -> None:
    script = (
        "import ctypes; from workers.hardening import make_non_dumpable;"
        "libc = ctypes.CDLL(None); before = libc.prctl(3, 0, 0, 0, 0);"
        "assert make_non_dumpable(); print(before, libc.prctl(3, 0, 0, 0, 0))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert shown.split() == ["1", "0"]


async def test_a_tenants_process_agent_finds_no_secret_of_the_server(dsn: str) -> None:
    """Project b may use the process runtime (``projects:<b>``); the server runs as root with
    project a's bootstrap key, the provider keys and a database URL with a password in its
    environment. b's agent reads what it can and reports it: none of these is in it. It
    cannot reach Postgres (which trusts local connections here, and holds the run-token key)
    or Redis, over TCP or their Unix sockets; its model call through the gateway works."""
    a, b = await two_tenants(dsn)
    password = "pw" + secrets.token_hex(12)
    parts = urllib.parse.urlsplit(dsn)  # trust auth here: the password is carried, not checked
    database_url = parts._replace(netloc=f"postgres:{password}@{parts.hostname}:{parts.port}")
    database_url_text = urllib.parse.urlunsplit(database_url)
    provider_key = "sk-provider-" + secrets.token_hex(16)
    shell_key = "sk-shell-" + secrets.token_hex(16)
    with agent_workspace() as work, running_fake_in_thread() as fake:
        data_dir = work / "data"
        report_file = work / "report.json"
        report_file.touch()
        report_file.chmod(0o666)  # the agent (another uid) writes what it found there
        env = server_env(
            PAPAYYA_OPENAI_BASE_URL=fake.openai_base_url,
            PAPAYYA_DATABASE_URL=database_url_text,
            PAPAYYA_BOOTSTRAP_API_KEY=a.key,
            PAPAYYA_OPENAI_API_KEY=provider_key,
            PAPAYYA_ANTHROPIC_API_KEY=provider_key,
            OPENAI_API_KEY=shell_key,
            PAPAYYA_DATA_DIR=str(data_dir),
            PAPAYYA_QUEUE_NAME=f"papayya:test:{secrets.token_hex(8)}",
            PAPAYYA_PROCESS_RUNTIME=f"projects:{b.project_id}",
        )
        async with papayya_server(env, work) as server, aiohttp.ClientSession() as http:
            started = server.log.read_text()
            assert f"process runtime: on for {b.project_id}" in started, started
            await agent_in(http, server.url, b, "snoop")
            status, body = await deploy(
                http, server.url, b, "snoop", bundle({"agent.py": SNOOP}), runtime="process"
            )
            assert status == 202, body
            status, body = await call(
                http, "POST", f"{server.url}/v1/agents/snoop/runs", b,
                {"input": {"data_dir": str(data_dir), "report": str(report_file)}},
            )  # fmt: skip
            assert status == 201, body
            run = await wait_for_run(http, server.url, b, body["id"])
            report = await asyncio.to_thread(report_file.read_text)
            assert run["status"] == "completed", (run, report)
            status, steps = await call(http, "GET", f"{server.url}/v1/runs/{run['id']}/steps", b)
            assert status == 200, steps
            found = json.loads(report)
            # The server itself no longer holds them where /proc shows its environment.
            environ = await asyncio.to_thread(
                Path(f"/proc/{server.process.pid}/environ").read_bytes
            )
        for secret in (a.key, provider_key, shell_key, password, database_url_text):
            assert secret not in report, secret
            assert secret.encode() not in environ, secret
        # The agent did look, as another uid with no groups, and was kept out.
        assert found["uid"] != 0 and found["gid"] != 0 and found["groups"] == []
        assert any(p.endswith("/cmdline") for p in found["read"])
        assert f"/proc/{server.process.pid}/environ" in found["denied"]
        assert found["parent"] in found["denied"]  # non-dumpable: even under the same uid
        assert found["hits"], "the scan read nothing at all"
        # No database or Redis, over TCP or a Unix socket, even with trust auth...
        attempts = {**found["postgres"], **found["redis"]}
        if isinstance(found["asyncpg"], dict):  # asyncpg is in the agent's reach here
            attempts.update(found["asyncpg"])
        # (refused, or no such socket: a timeout would prove nothing)
        shut = ("error: ConnectionRefusedError", "error: FileNotFoundError")
        assert len(attempts) >= 5 and all(a.startswith(shut) for a in attempts.values()), attempts
        # ...but its model call, through the gateway on its run token, is answered and metered.
        assert found["gateway"], found
        (llm,) = [s for s in steps if s["model"]]
        assert llm["input_tokens"] > 0 and llm["output_tokens"] > 0, llm

"""Bad input gets a 4xx with the JSON error shape and writes nothing (README "Security"),
whatever the route: every operation in ``/openapi.json`` that takes a JSON body, the signed
webhook trigger and the gateway are sent JSON nested 20,000 deep, NUL in every string and key,
bodies that are not gzip or deflate as they claim, and bodies that are not UTF-8 or not JSON.
Each of these used to answer 500 somewhere (NUL in a key name, deep JSON, a bad gzip body).
So do requests aiohttp refuses before any route sees them (a request line over the limit, too
many headers): they get the same JSON shape. And a bundle path 2,000 directories deep is
refused before anything is stored or unpacked."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from papayya import bundles, runtokens, signing
from papayya.domain import events as ev
from tests.support.listener import Listening, exchange, listening, row_counts, split_response
from web import http as web_http
from web import keys
from web.openapi import api as spec

pytestmark = pytest.mark.timeout(300)

DEPTH = 20_000
DEEP = b"[" * DEPTH + b"]" * DEPTH
# A valid body of each operation that takes one: every string in it, every key of its objects
# and each of its fields in turn is made hostile (an operation missing here fails the test).
BODIES: dict[str, dict[str, Any]] = {
    "post_create_project": {"name": "hostile"},
    "post_create_key": {"name": "hostile"},
    "patch_update_project": {"name": "hostile"},
    "put_put_rate_card": {"m": {"input_per_million_usd": "1", "output_per_million_usd": "2"}},
    "post_create_agent": {"name": "other", "slug": "other", "config": {"model": "m"}},
    "patch_patch_agent": {"name": "renamed", "config": {"model": "m"}},
    "post_register": {"entrypoint": "agent.py"},
    "post_open_run": {"run_id": "durable-2", "agent": "hostile", "input": {"q": "x"}},
    "post_post_checkpoint": {"label": "step", "duration_ms": 1, "result": {"a": "b"}},
    "post_post_cost": {"label": "search", "cost_micro_usd": 1000},
    "patch_finish_run": {"status": "completed", "output": {"a": "b"}},
    "post_exchange": {"token": "x"},
    "post_create_run": {"agent_id": "hostile", "input": {"q": "x"}, "metadata": {"k": "v"}},
    "post_create_agent_run": {"input": {"q": "x"}, "metadata": {"k": "v"}},
    "post_cancel_run": {"reason": "stop"},
    "post_replay_run": {"from_step": 0, "input": {"q": "x"}},
    "post_resume_run": {"budget_cents": 100},
    "post_heartbeat": {},
    "post_ask_tool_call": {"tool": "search", "arguments": {"q": "x"}},
    "post_record_tool_call": {"tool": "search", "arguments": {"q": "x"}, "output": "o"},
    "post_ask_task": {"label": "task"},
    "post_record_task": {"label": "task", "duration_ms": 1, "result": {"a": "b"}},
    "post_complete": {"output": {"a": "b"}},
    "post_fail": {"error_type": "E", "message": "m"},
    "post_create_schedule": {"cron_expression": "0 9 * * *", "timezone": "UTC", "input": {}},
    "patch_patch_schedule": {"enabled": False, "input": {"q": "x"}},
    "post_create_webhook": {"name": "other", "description": "d"},
    "patch_update_webhook": {"name": "renamed", "scheme": "github", "secret": "x" * 20},
    "post_set_secret": {"name": "HOSTILE", "value": "v"},
}


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    return {**value, path[0]: _replace(value[path[0]], path[1:], new)}


def hostile_bodies(valid: dict[str, Any]) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    """(what, body, extra headers) for one operation, from a valid body of it."""
    as_json = {"Content-Type": "application/json"}
    yield "deep", b'{"x": ' + DEEP + b"}", as_json
    for key in valid:
        yield (
            f"deep {key}",
            json.dumps({**valid, key: 0})
            .replace(f'"{key}": 0', f'"{key}": ' + DEEP.decode())
            .encode(),
            as_json,
        )
    for path, leaf in _leaves(valid):
        if isinstance(leaf, str):
            body = _replace(valid, path, leaf + "\x00")
            yield f"NUL in {'.'.join(path)}", json.dumps(body).encode(), as_json
        if isinstance(leaf, dict):
            body = _replace(valid, path, {**leaf, "k\x00": "v"})
            yield (
                f"NUL in a key of {'.'.join(path) or 'the body'}",
                json.dumps(body).encode(),
                as_json,
            )
    raw = json.dumps(valid).encode()
    yield "not gzip", b"\x1f\x8b" + raw, {**as_json, "Content-Encoding": "gzip"}
    yield "not deflate", raw, {**as_json, "Content-Encoding": "deflate"}
    zipped = {**as_json, "Content-Encoding": "gzip"}
    yield "gzip of deep JSON", gzip.compress(b'{"x": ' + DEEP + b"}"), zipped
    yield "not UTF-8", b'{"\xff\xfe": "\xc3"}', as_json
    yield "not JSON", b"{", {"Content-Type": "text/plain"}


def _assert_error(status: int, raw: bytes, headers: Any, what: str, shape: str = "code") -> None:
    """A 4xx with ``{"error": {"code", "message"}}`` (the gateway answers in its provider's
    shape: ``shape="type"``)."""
    assert 400 <= status < 500, (what, status, raw[:300])
    error = json.loads(raw)["error"]
    assert isinstance(error[shape], str) and isinstance(error["message"], str), what
    assert headers.get("X-Request-Id"), what


async def _fixtures(api: Listening, http: aiohttp.ClientSession) -> dict[str, str]:
    """Ids for every path parameter: real ones, so that each body is actually read."""
    h = api.headers()

    async def post(path: str, body: Any) -> Any:
        async with http.post(api.url + path, json=body, headers=h) as r:
            assert r.status in (200, 201, 202), (path, r.status, await r.text())
            return await r.json()

    async with http.get(api.url + "/v1/projects", headers=h) as r:
        project = (await r.json())[0]["id"]
    await post("/v1/agents", {"name": "hostile", "slug": "hostile", "config": {"model": "m"}})
    key = await post(f"/v1/projects/{project}/api-keys", {"name": "k"})
    run = await post("/v1/agents/hostile/runs", {"input": "x"})
    await post("/v1/durable/runs", {"run_id": "durable-1", "agent": "hostile"})
    schedule = await post("/v1/agents/hostile/schedules", {"cron_expression": "0 9 * * *",
                                                          "timezone": "UTC"})  # fmt: skip
    webhook = await post("/v1/agents/hostile/webhooks", {"name": "h"})
    # A running run of the agent and its token, as a worker would make them.
    running = await api.app[keys.RUNS].queue(
        ev.RunQueued(run_id="run_" + uuid.uuid4().hex[:12], project_id=project, agent_id="x")
    )
    running = await api.app[keys.RUNS].append(running, [ev.RunStarted(attempt=1)])
    token = runtokens.mint(api.app[keys.RUN_TOKEN_SECRET], running.run_id, 1)
    return {
        "project": project, "key_id": key.get("id") or key.get("key_id", "k"), "run": run["id"],
        "schedule": schedule["id"], "webhook": webhook["id"], "secret": webhook["secret"],
        "token": token,
    }  # fmt: skip


def _path(path: str, ids: dict[str, str]) -> str:
    by_prefix = {"/v1/projects/": ids["project"], "/v1/agents/": "hostile",
                 "/v1/runs/": ids["run"], "/v1/schedules/": ids["schedule"],
                 "/v1/webhooks/": ids["webhook"], "/v1/deployments/": "dep_x"}  # fmt: skip
    for prefix, value in by_prefix.items():
        if path.startswith(prefix):
            path = path.replace("{id}", value)
    return (
        path.replace("{run_id}", "durable-1")
        .replace("{key_id}", ids["key_id"])
        .replace("{n}", "0")
        .replace("{route:.+}", "chat/completions" if "openai" in path else "v1/messages")
    )


async def test_every_json_body_refuses_hostile_json_with_4xx_and_writes_nothing(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    async with listening(dsn, monkeypatch) as api:
        ids = await _fixtures(api, http)
        before = await row_counts(dsn)
        tried = 0
        for route in spec.routes:
            op = f"{route.method.lower()}_{route.handler.__name__}"
            gateway = route.path.startswith("/v1/llm/")
            if route.body is None and not gateway:
                continue
            valid = {"model": "m", "messages": []} if gateway else BODIES.get(op)
            assert valid is not None, f"add a valid body of {op} to BODIES"
            auth = (
                {"Authorization": f"Bearer {ids['token']}"}
                if route.auth == "run_token"
                else api.headers()
            )
            for what, body, headers in hostile_bodies(valid):
                if gateway and what.startswith("NUL"):
                    continue  # a prompt may hold NUL: it is forwarded, not stored as text
                url = api.url + _path(route.path, ids)
                async with http.request(route.method, url, data=body,
                                        headers={**auth, **headers}) as r:  # fmt: skip
                    raw = await r.read()
                    shape = "type" if gateway else "code"
                    _assert_error(r.status, raw, r.headers, f"{op}: {what}", shape)
                tried += 1
        assert tried > 250
        assert await row_counts(dsn) == before


async def test_the_signed_webhook_trigger_refuses_hostile_json_and_writes_nothing(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    async with listening(dsn, monkeypatch) as api:
        ids = await _fixtures(api, http)
        before = await row_counts(dsn)
        url = f"{api.url}/v1/webhooks/{ids['webhook']}/trigger"
        for what, body, headers in hostile_bodies({"event": "push", "data": {"ref": "main"}}):
            if what == "not JSON":
                continue  # a text/plain body is the run's input as text: a valid trigger
            # Signed as sent: the signature covers the bytes, compressed or not.
            signed = signing.headers(ids["secret"], "msg_" + uuid.uuid4().hex, body)
            async with http.post(url, data=body, headers={**signed, **headers}) as r:
                _assert_error(r.status, await r.read(), r.headers, what)
        assert await row_counts(dsn) == before


@pytest.mark.parametrize(
    ("what", "request_bytes"),
    [
        ("a request line over the limit", b"GET /v1/" + b"a" * 20_000 + b" HTTP/1.1\r\n"),
        ("a header over the limit", b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n"),
        ("too many headers", b"GET /healthz HTTP/1.1\r\n" + b"X-A: a\r\n" * 200),
        ("a bad method", b"G\x00T /healthz HTTP/1.1\r\n"),
        ("a path that is not UTF-8", b"GET /v1/agents/\xff\xfe HTTP/1.1\r\n"),
        ("a bad Content-Length", b"POST /v1/agents HTTP/1.1\r\nContent-Length: x\r\n"),
        (
            "a huge Content-Length",
            b"POST /v1/agents HTTP/1.1\r\nContent-Length: 9" + b"9" * 30 + b"\r\n",
        ),
        ("a bad chunk", b"POST /v1/agents HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
    ],
)
async def test_requests_aiohttp_refuses_get_the_json_error_shape(
    dsn: str, monkeypatch: pytest.MonkeyPatch, what: str, request_bytes: bytes
) -> None:
    async with listening(dsn, monkeypatch) as api:
        head, _, rest = request_bytes.partition(b"\r\n")
        raw = await exchange(api, head + b"\r\nHost: x\r\nConnection: close\r\n" + rest + b"\r\n")
        status, headers, body = split_response(raw)
        assert 400 <= status < 500, (what, raw[:300])
        assert headers["content-type"].startswith("application/json"), (what, raw[:300])
        assert headers.get("x-request-id"), what
        error = json.loads(body)["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
        if "over the limit" in what:
            assert error["code"] == "line_too_long"


def test_json_depth_and_nul_checks_read_strings_as_json_does() -> None:
    # Brackets and escaped NULs inside strings are text; an escaped backslash is no escape.
    text = json.dumps({"a": "[[[[{{{{" * 100, "b": "\\u0000", "c": ["\\\\u0000"]}).encode()
    assert web_http.json_depth(text) <= 2
    assert web_http.decode_json(text) == json.loads(text)
    for hostile in (b'["\\u0000"]', b'{"\\u0000": 1}', b'["\\\\\\u0000"]'):
        with pytest.raises(web_http.InvalidInput, match="NUL"):
            web_http.decode_json(hostile)
    nested = b"[" * 129 + b"]" * 129
    assert web_http.json_depth(nested) == 129
    with pytest.raises(web_http.InvalidInput, match="deeper"):
        web_http.decode_json(nested)
    web_http.decode_json(b"[" * 128 + b"]" * 128)


def _deep_bundle(target: Path) -> None:
    """A tar.gz with ``agent.py`` and a file 2,000 directories down."""
    with tarfile.open(target, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("agent.py", b"def main(x):\n    return x\n"),
                           ("/".join(["d"] * 2000) + "/f.py", b"")):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


async def test_a_bundle_path_2000_directories_deep_is_refused_and_leaves_nothing(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    async with listening(dsn, monkeypatch, data_dir=data) as api:
        await _fixtures(api, http)
        bundle = tmp_path / "deep.tar.gz"
        _deep_bundle(bundle)
        before = await row_counts(dsn)
        files_before = sorted(p for p in data.rglob("*")) if data.exists() else []
        form = aiohttp.FormData()
        form.add_field("file", bundle.read_bytes(), filename="bundle.tar.gz")
        async with http.post(
            f"{api.url}/v1/agents/hostile/deploy", data=form, headers=api.headers()
        ) as r:
            raw = await r.read()
            _assert_error(r.status, raw, r.headers, "deep bundle")
            assert json.loads(raw)["error"]["code"] == "invalid_bundle"
        assert await row_counts(dsn) == before
        assert (sorted(p for p in data.rglob("*")) if data.exists() else []) == files_before


async def test_a_multipart_upload_that_is_not_the_gzip_it_claims_is_a_400(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    async with listening(dsn, monkeypatch) as api:
        await _fixtures(api, http)
        before = await row_counts(dsn)
        headers = {**api.headers(), "Content-Encoding": "gzip",
                   "Content-Type": "multipart/form-data; boundary=zz"}  # fmt: skip
        async with http.post(
            f"{api.url}/v1/agents/hostile/deploy", data=b"\x1f\x8bnot gzip", headers=headers
        ) as r:
            _assert_error(r.status, await r.read(), r.headers, "deploy: not gzip")
        assert await row_counts(dsn) == before


def test_a_bundle_that_cannot_be_unpacked_leaves_no_directory(tmp_path: Path) -> None:
    bundle = tmp_path / "deep.tar.gz"
    _deep_bundle(bundle)
    with pytest.raises(bundles.InvalidBundle, match="longer than 1024 bytes"):
        bundles.inspect_bundle(bundle)
    target = tmp_path / "deployments" / "dep_1"
    with pytest.raises((OSError, RecursionError)):  # unpacked without inspection: it fails
        bundles.extract(bundle, target)
    assert not target.exists()

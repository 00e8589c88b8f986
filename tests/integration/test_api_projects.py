"""Projects and API keys over HTTP, through pytest-aiohttp's ``api_client``."""

from __future__ import annotations

import io

import asyncpg

from tests.support.api import ApiClient


def key_header(key: str) -> dict[str, str]:
    return {"X-Api-Key": key}


async def test_key_required_and_both_header_forms(api_client: ApiClient, api_key: str) -> None:
    async with api_client.get("/v1/projects") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"
        assert resp.headers["X-Request-Id"]
    async with api_client.get("/v1/projects", headers=key_header("cpk_wrong")) as resp:
        assert resp.status == 401
    bearer = {"Authorization": f"Bearer {api_key}"}
    async with api_client.get("/v1/projects", headers=bearer) as resp:
        assert resp.status == 200
        projects = await resp.json()
        assert [p["name"] for p in projects] == ["default"]


async def test_project_creation_keys_and_isolation(
    api_client: ApiClient, api_key: str, dsn: str
) -> None:
    h = key_header(api_key)
    async with api_client.post("/v1/projects", json={"name": "team-b"}, headers=h) as resp:
        assert resp.status == 201
        created = await resp.json()
    other_key = created["api_key"]["key"]
    assert other_key.startswith("cpk_")
    other = created["id"]
    async with api_client.get("/v1/projects", headers=h) as resp:
        mine = (await resp.json())[0]["id"]
    # Another project's id answers 404, as if it did not exist.
    for method, path in [
        ("GET", f"/v1/projects/{other}/api-keys"),
        ("POST", f"/v1/projects/{other}/api-keys"),
        ("DELETE", f"/v1/projects/{other}/api-keys/{created['api_key']['id']}"),
    ]:
        async with api_client.request(method, path, json={}, headers=h) as r:
            assert r.status == 404, (method, path)
            assert (await r.json())["error"]["code"] == "not_found"
    async with api_client.post(
        f"/v1/projects/{mine}/api-keys", json={"name": "ci"}, headers=h
    ) as resp:
        assert resp.status == 201
        new = await resp.json()
    async with api_client.get(f"/v1/projects/{mine}/api-keys", headers=h) as r:
        listed = await r.json()
        assert {k["id"] for k in listed} >= {new["id"]}
        assert all("key" not in k and "key_hash" not in k for k in listed)
    # Keys are stored hashed: the secret is nowhere in the database.
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT * FROM api_keys")
        assert rows and all(new["key"] not in str(dict(r)) for r in rows)
    finally:
        await conn.close()
    async with api_client.delete(f"/v1/projects/{mine}/api-keys/{new['id']}", headers=h) as resp:
        assert resp.status == 200 and (await resp.json())["revoked_at"]
    async with api_client.get("/v1/projects", headers=key_header(new["key"])) as resp:
        assert resp.status == 401
    async with api_client.get("/v1/projects", headers=key_header(other_key)) as resp:
        assert (await resp.json())[0]["id"] == other


async def test_bad_bodies_write_nothing(api_client: ApiClient, api_key: str, dsn: str) -> None:
    h = key_header(api_key)
    cases = [
        (b"", 400),
        (b"{not json", 400),
        (b'{"name": "x", "extra": 1}', 400),
        (b'{"name": ""}', 400),
        (b'{"name": 5}', 400),
        (b"[]", 400),
        (b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}', 413),
    ]
    for raw, status in cases:
        async with api_client.post(
            "/v1/projects",
            data=io.BytesIO(raw),
            headers={**h, "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == status, raw[:40]
            body = await resp.json()
            assert body["error"]["code"] and body["error"]["message"]
    async with api_client.post("/v1/projects", json={"name": "default"}, headers=h) as r:
        assert r.status == 409
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM projects") == 1
    finally:
        await conn.close()


async def test_openapi_describes_the_routes(api_client: ApiClient) -> None:
    async with api_client.get("/openapi.json") as resp:
        spec = await resp.json()
    assert spec["openapi"].startswith("3.")
    assert "post" in spec["paths"]["/v1/projects"]
    assert "CreateProject" in spec["components"]["schemas"]

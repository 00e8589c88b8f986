"""The built-in loop's agent fields over HTTP: accepted, returned, patched, validated; and
the run options that override them."""

from __future__ import annotations

from typing import Any

from tests.support.api import Api
from web import keys

LOOP_CONFIG = {
    "model": "gpt-4o-mini",
    "instructions": "You answer weather questions.",
    "temperature": 0.2,
    "provider": "openai",
    "output_schema": {"type": "object", "required": ["answer"]},
    "tools": [
        {
            "name": "weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "url": "https://tools.example.com/weather",
        }
    ],
    "mcp_servers": [{"url": "https://mcp.example.com/mcp", "allowed_tools": ["forecast"]}],
}


async def test_loop_fields_are_kept_returned_and_patched(api: Api, http: Any) -> None:
    h = api.headers()
    body = {"name": "Weather", "slug": "weather", "config": LOOP_CONFIG}
    async with http.post(f"{api.url}/v1/agents", json=body, headers=h) as resp:
        assert resp.status == 201, await resp.text()
        created = await resp.json()
    config = created["config"]
    assert {k: config[k] for k in LOOP_CONFIG if k != "mcp_servers"} == {
        k: v for k, v in LOOP_CONFIG.items() if k != "mcp_servers"
    }
    assert config["mcp_servers"] == [
        {"url": "https://mcp.example.com/mcp", "allowed_tools": ["forecast"]}
    ]
    patch = {"config": {"temperature": None, "mcp_servers": [{"url": "http://m.example/x"}]}}
    async with http.patch(f"{api.url}/v1/agents/weather", json=patch, headers=h) as resp:
        assert resp.status == 200, await resp.text()
        changed = (await resp.json())["config"]
    assert changed["temperature"] is None and changed["provider"] == "openai"
    assert changed["mcp_servers"] == [{"url": "http://m.example/x", "allowed_tools": None}]
    assert changed["output_schema"] == LOOP_CONFIG["output_schema"]


async def test_bad_loop_fields_are_refused(api: Api, http: Any) -> None:
    h = api.headers()
    for bad in (
        {"temperature": 3},
        {"provider": "mistral"},
        {"tools": [{"name": "has space", "url": "https://x.example/"}]},
        {"tools": [{"name": "t", "url": "ftp://x.example/"}]},
        {"mcp_servers": [{"url": "https://m.example/", "token": "b"}]},
        {"mcp_servers": [{"url": "https://m.example/", "headers": {"a b": "c"}}]},
        {"mcp_servers": [{"url": "https://m.example/", "headers": {"a": {"secret": ""}}}]},
        {"tools": [{"name": "t", "url": "https://x.example/", "headers": {"a": {"s": "X"}}}]},
    ):
        body = {"name": "B", "slug": "bad-loop", "config": {"model": "gpt-4o-mini", **bad}}
        async with http.post(f"{api.url}/v1/agents", json=body, headers=h) as resp:
            assert resp.status == 400, (bad, await resp.text())
    async with http.get(f"{api.url}/v1/agents/bad-loop", headers=h) as resp:
        assert resp.status == 404


async def test_runs_and_replays_carry_model_and_system_prompt(api: Api, http: Any) -> None:
    h = api.headers()
    body = {"name": "W", "slug": "w", "config": {"model": "gpt-4o-mini"}}
    async with http.post(f"{api.url}/v1/agents", json=body, headers=h) as resp:
        assert resp.status == 201
    run = {"agent_id": "w", "input": "hi", "model": "gpt-4o", "system_prompt": "Be terse.",
           "max_steps": 4, "budget_cents": 25}  # fmt: skip
    async with http.post(f"{api.url}/v1/runs", json=run, headers=h) as resp:
        assert resp.status == 201, await resp.text()
        created = await resp.json()
    assert created["max_steps"] == 4 and created["budget_cents"] == 25
    metadata = (await api.app[keys.RUNS].load(created["id"])).metadata
    assert metadata["papayya.model"] == "gpt-4o"
    assert metadata["papayya.system_prompt"] == "Be terse."
    replay = {"from_step": 0, "system_prompt": "Be verbose."}
    url = f"{api.url}/v1/runs/{created['id']}/replay"
    async with http.post(url, json=replay, headers=h) as resp:
        assert resp.status == 201, await resp.text()
        replayed = await resp.json()
    metadata = (await api.app[keys.RUNS].load(replayed["id"])).metadata
    assert metadata["papayya.system_prompt"] == "Be verbose."
    assert metadata["papayya.model"] == "gpt-4o"

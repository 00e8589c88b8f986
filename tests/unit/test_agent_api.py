"""The agent code API: registration and the JSON schema of tools, with no runtime."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Optional

import pytest

from papayya import agent, current_run, tool
from papayya.agentapi import AGENTS, json_schema


@tool
def search(query: str, limit: int = 5, exact: bool = False, tags: list[str] | None = None) -> Any:
    """Search the web.

    Args:
        query: what to look for
        limit: how many results
    """
    return [query] * limit


@tool(name="weather_now", description="Current weather")
def weather(city: str, units: Optional[str] = None, extra: dict[str, float] = {}) -> str:  # noqa: B006, UP045
    return city


def test_tool_schema_from_hints_defaults_and_docstring() -> None:
    assert search.schema() == {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "what to look for"},
                    "limit": {"type": "integer", "description": "how many results", "default": 5},
                    "exact": {"type": "boolean", "default": False},
                    "tags": {
                        "type": ["array", "null"],
                        "items": {"type": "string"},
                        "default": None,
                    },
                },
                "required": ["query"],
            },
        },
    }


def test_tool_name_description_optional_and_dict() -> None:
    function = weather.schema()["function"]
    assert function["name"] == "weather_now" and function["description"] == "Current weather"
    props = function["parameters"]["properties"]
    assert props["units"] == {"type": ["string", "null"], "default": None}
    assert props["extra"] == {"type": "object", "additionalProperties": {"type": "number"},
                              "default": {}}  # fmt: skip
    assert function["parameters"]["required"] == ["city"]


@pytest.mark.parametrize(
    ("hint", "schema"),
    [(float, {"type": "number"}), (list, {"type": "array"}), (Any, {}),
     (int | str, {"anyOf": [{"type": "integer"}, {"type": "string"}]})],
)  # fmt: skip
def test_json_schema_of_hints(hint: Any, schema: dict[str, Any]) -> None:
    assert json_schema(hint) == schema


def test_tools_are_plain_functions_outside_the_runtime() -> None:
    assert search("x", limit=2) == ["x", "x"]
    with pytest.raises(RuntimeError, match="current_run"):
        current_run()


def test_agent_registers_bare_and_with_settings() -> None:
    @agent
    def plain(task: str) -> str:
        return task

    @agent(name="helper", model="gpt-4o", tools=[search], max_steps=3, budget_usd=0.5)
    def other() -> None:
        return None

    assert AGENTS["plain"].fn is plain and plain("a") == "a"
    spec = AGENTS["helper"]
    assert spec.model == "gpt-4o" and spec.tools == (search,) and spec.max_steps == 3

    # The published SDK's form: the name first.
    @agent("researcher", model="gpt-4o-mini")
    def research(task: str) -> str:
        return task

    assert AGENTS["researcher"].fn is research and AGENTS["researcher"].model == "gpt-4o-mini"


def test_agent_api_imports_with_the_standard_library_alone() -> None:
    code = (
        "import sys; from papayya import agent, tool, current_run; import papayya.runtime; "
        "assert callable(agent) and not isinstance(agent, type(sys)); "
        "bad = {'msgspec', 'aiohttp', 'asyncpg'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""The agent code API: ``@agent``, ``@tool`` and ``current_run()``.

Standard library only: the image builder copies this module into any Python 3.10+ image, where
``python -m papayya.runtime`` runs the registered agent. Outside the runtime a tool is a plain
function and ``current_run()`` raises.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
}
_PARAM_DOC = re.compile(r"^\s*:param\s+(\w+):\s*(.+)$|^\s*(\w+)\s*(?:\([^)]*\))?:\s*(.+)$")


@dataclass(frozen=True)
class AgentSpec:
    """A registered agent: its function and the settings a deployment starts it with."""

    fn: Callable[..., Any]
    name: str
    model: str | None = None
    instructions: str | None = None
    tools: tuple[Any, ...] = ()
    max_steps: int | None = None
    budget_usd: float | None = None


@dataclass
class ToolSpec:
    """A tool: its name, description and JSON-schema parameters (OpenAI function shape)."""

    fn: Callable[..., Any]
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)

    def schema(self) -> dict[str, Any]:
        """The tool as OpenAI's ``tools=[...]`` takes it."""
        function = {"name": self.name, "description": self.description}
        return {"type": "function", "function": {**function, "parameters": self.parameters}}


class ToolRecorder(Protocol):
    """What the runtime installs so every tool call is recorded (and answered on replay)."""

    def __call__(self, spec: ToolSpec, arguments: dict[str, Any]) -> Any: ...


class Run(Protocol):
    """The run an agent is executing, as ``current_run()`` returns it."""

    @property
    def id(self) -> str: ...

    def task(self, label: str, fn: Callable[[], T]) -> T: ...


AGENTS: dict[str, AgentSpec] = {}
_recorder: ToolRecorder | None = None
# One process runs one run, so a global (a context variable would hide it from the threads an
# agent starts).
_current: Run | None = None


def agent(
    fn: Callable[..., Any] | str | None = None,
    *,
    name: str | None = None,
    model: str | None = None,
    instructions: str | None = None,
    tools: typing.Sequence[Any] = (),
    max_steps: int | None = None,
    budget_usd: float | None = None,
) -> Any:
    """Register an agent function; usable bare (``@agent``) or with settings, its name first
    as the published SDK takes it too (``@agent("researcher", model=...)``)."""
    if isinstance(fn, str):
        fn, name = None, fn

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        spec = AgentSpec(
            fn, name or fn.__name__, model, instructions, tuple(tools), max_steps, budget_usd
        )
        AGENTS[spec.name] = spec
        fn.__papayya_agent__ = spec  # type: ignore[attr-defined]
        return fn

    return register(fn) if fn is not None else register


def tool(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None
) -> Any:
    """Make a function a tool: ``.schema()`` describes it; under the runtime each call is
    recorded, and answered from the recording when a resumed run repeats it."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        spec = tool_spec(fn, name, description)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if _recorder is None:
                return fn(*args, **kwargs)
            bound = inspect.signature(fn).bind(*args, **kwargs)
            bound.apply_defaults()
            return _recorder(spec, dict(bound.arguments))

        call.__papayya_tool__ = spec  # type: ignore[attr-defined]
        call.schema = spec.schema  # type: ignore[attr-defined]
        return call

    return wrap(fn) if fn is not None else wrap


def tool_spec(
    fn: Callable[..., Any], name: str | None = None, description: str | None = None
) -> ToolSpec:
    """The tool ``fn`` makes: parameters from its type hints and defaults, descriptions from
    its docstring (the summary, and ``:param x:`` or ``x: …`` lines under ``Args:``)."""
    hints = typing.get_type_hints(fn)
    summary, param_docs = _docstring(inspect.getdoc(fn) or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        prop = json_schema(hints.get(param.name, Any))
        if param.name in param_docs:
            prop["description"] = param_docs[param.name]
        if param.default is param.empty:
            required.append(param.name)
        elif _jsonable(param.default):
            prop["default"] = param.default
        properties[param.name] = prop
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return ToolSpec(fn, name or fn.__name__, description or summary, parameters)


def json_schema(hint: Any) -> dict[str, Any]:
    """The JSON schema of a type hint: str/int/float/bool, list[X], dict[str, X], Optional."""
    if hint is Any or hint is inspect.Parameter.empty:
        return {}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in args if a is not type(None)]
        inner = json_schema(options[0]) if len(options) == 1 else {
            "anyOf": [json_schema(a) for a in options]
        }  # fmt: skip
        if len(options) < len(args) and "type" in inner:
            return {**inner, "type": [inner["type"], "null"]}
        return inner
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        schema: dict[str, Any] = {"type": "array"}
        if args and args[0] is not Ellipsis:
            schema["items"] = json_schema(args[0])
        return schema
    if origin is dict or hint is dict:
        schema = {"type": "object"}
        if len(args) == 2:
            schema["additionalProperties"] = json_schema(args[1])
        return schema
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    return {}


def _docstring(doc: str) -> tuple[str, dict[str, str]]:
    summary = doc.split("\n\n", 1)[0].strip().replace("\n", " ")
    params: dict[str, str] = {}
    for line in doc.splitlines():
        found = _PARAM_DOC.match(line)
        if found and line != doc.splitlines()[0]:
            key, text = (found[1], found[2]) if found[1] else (found[3], found[4])
            params[key] = text.strip()
    return summary, params


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)


def current_run() -> Run:
    """The run this agent code executes in (only inside ``python -m papayya.runtime``)."""
    run = _current
    if run is None:
        raise RuntimeError("current_run() works only inside an agent run by papayya.runtime")
    return run


def install(run: Run, recorder: ToolRecorder) -> None:
    """Used by the runtime: make ``run`` current and route tool calls to ``recorder``."""
    global _recorder, _current
    _recorder = recorder
    _current = run

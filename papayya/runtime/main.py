"""Load the agent, wire it to the control plane, run it once, report how it ended."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from types import CodeType, FrameType, ModuleType
from typing import Any, TypeVar

from papayya.agentapi import AGENTS, AgentSpec, ToolSpec, install
from papayya.runtime.client import RuntimeClient
from papayya.runtime.forward import forward

T = TypeVar("T")
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TERMINATED = 143
DEFAULT_HEARTBEAT_SECONDS = 15.0
DEFAULT_GRACE_SECONDS = 10.0


class ConfigError(Exception):
    """The runtime's environment does not say which agent to run, or how to reach the API."""


class RecordedToolError(Exception):
    """A tool call answered from the recording of a call that raised."""


def _json(value: Any) -> Any:
    """``value`` as JSON has it (what a replay will answer), unrepresentable parts as text."""
    return json.loads(json.dumps(value, default=str))


class RemoteRun:
    """``current_run()`` inside the runtime: tasks and tool calls go through the runtime API."""

    def __init__(self, client: RuntimeClient, run_id: str) -> None:
        self._client = client
        self._id = run_id
        self._labels: dict[str, int] = {}

    @property
    def id(self) -> str:
        return self._id

    def task(self, label: str, fn: Callable[[], T]) -> T:
        """``fn()``, checkpointed: a resumed run gets the recorded result without calling it."""
        seen = self._labels[label] = self._labels.get(label, 0) + 1
        numbered = label if seen == 1 else f"{label}#{seen}"
        found = self._client.post("tasks", {"label": numbered})
        if found["recorded"]:
            return found["result"]  # type: ignore[no-any-return]
        started = time.monotonic()
        try:
            result = fn()
        except Exception as exc:
            took = (time.monotonic() - started) * 1000
            body = {"label": numbered, "error": repr(exc), "duration_ms": took}
            self._client.post("tasks/result", body)
            raise
        took = (time.monotonic() - started) * 1000
        body = {"label": numbered, "result": _json(result), "duration_ms": took}
        self._client.post("tasks/result", body)
        return result

    def call_tool(self, spec: ToolSpec, arguments: dict[str, Any]) -> Any:
        """Run a tool, or answer it from the recording; either way its call is recorded."""
        arguments = _json(arguments)
        found = self._client.post("tool-calls", {"tool": spec.name, "arguments": arguments})
        if found["recorded"]:
            if found.get("error") is not None:
                raise RecordedToolError(found["error"])
            return found["output"]
        started = time.monotonic()
        body: dict[str, Any] = {"tool": spec.name, "arguments": arguments}
        try:
            output = spec.fn(**arguments)
        except Exception as exc:
            body |= {"error": repr(exc), "duration_ms": (time.monotonic() - started) * 1000}
            self._client.post("tool-calls/result", body)
            raise
        body |= {"output": _json(output), "duration_ms": (time.monotonic() - started) * 1000}
        self._client.post("tool-calls/result", body)
        return output


# An agent module's code, compiled by the fork server: (mtime_ns, size, code) by path.
_compiled: dict[str, tuple[int, int, CodeType]] = {}


def precompile(target: str) -> None:
    """Compile the agent module at the absolute path ``target`` without running it (its
    module-level code may read the run's environment), so that each forked run executes it
    without reading and compiling it again: the agent's uid may not write its ``.pyc``."""
    if not (target.endswith(".py") and os.path.isabs(target)):
        return
    try:
        info = os.stat(target)
        with open(target, "rb") as source:
            code = compile(source.read(), target, "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError):
        return  # the run loads it itself, and reports what is wrong
    _compiled[target] = (info.st_mtime_ns, info.st_size, code)


def _precompiled(target: str) -> CodeType | None:
    """The fork server's compilation of ``target``, if the file has not changed since."""
    found = _compiled.get(target)
    if found is None:
        return None
    try:
        info = os.stat(target)
    except OSError:
        return None
    return found[2] if (info.st_mtime_ns, info.st_size) == found[:2] else None


def load_module(target: str) -> ModuleType:
    """An agent module by file path (``./agent.py``) or by module name (``pkg.agent``)."""
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load an agent module from {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        sys.path.insert(0, str(path.resolve().parent))
        code = _precompiled(target)
        if code is not None:
            exec(code, module.__dict__)  # what the loader's exec_module does with it
        else:
            spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)


def pick_agent(agents: Mapping[str, AgentSpec], name: str | None) -> AgentSpec:
    """The agent called ``name``, or the only one there is."""
    if name:
        if name not in agents:
            known = ", ".join(sorted(agents)) or "none"
            raise ConfigError(f"no @agent named {name!r} (agents: {known})")
        return agents[name]
    if len(agents) != 1:
        known = ", ".join(sorted(agents)) or "none"
        raise ConfigError(f"set PAPAYYA_AGENT_FUNCTION to pick one @agent (agents: {known})")
    return next(iter(agents.values()))


def run_agent(spec: AgentSpec, input: Any) -> Any:
    """Call the agent with the run's input (none if it takes no parameters); await it if async."""
    takes_input = bool(inspect.signature(spec.fn).parameters)
    result = spec.fn(input) if takes_input else spec.fn()
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class Heartbeats:
    """Heartbeats on a thread of their own, from when the first one is due (``due``, called
    ``every`` seconds after the start) and the run is known (``begin``), whichever is later.
    A thread costs a no-op run about a tenth of its CPU, and most short runs never beat."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._client: RuntimeClient | None = None
        self._due = False

    def begin(self, client: RuntimeClient) -> None:
        with self._lock:
            self._client, due = client, self._due
        if due:
            self._start(client)

    def due(self) -> None:
        with self._lock:
            self._due, client = True, self._client
        if client is not None:
            self._start(client)

    def after(self) -> None:
        """Wait for the first beat on a thread of our own (no forward's thread to wait on)."""
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        if not self.stop.wait(self.every):
            self.due()

    def _start(self, client: RuntimeClient) -> None:
        if not self.stop.is_set():
            threading.Thread(target=self._beat, args=(client,), daemon=True).start()

    def _beat(self, client: RuntimeClient) -> None:
        while not self.stop.is_set():
            try:
                answer = client.post("heartbeat", {})
            except Exception as exc:  # a missed beat is the lease's business, not the agent's
                print(f"papayya runtime: heartbeat failed: {exc}", file=sys.stderr)
            else:
                if answer.get("cancel_requested"):
                    # Stopping is the same path as the worker's SIGTERM: interrupt, then the
                    # grace timer.
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
            if self.stop.wait(self.every):
                return


def _on_sigterm(grace: float) -> Callable[[int, FrameType | None], None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        # Interrupt the agent; if it swallows the exit, end the process after the grace period.
        # The worker records the outcome (cancelled, or a new attempt), so nothing is reported.
        timer = threading.Timer(grace, os._exit, (EXIT_TERMINATED,))
        timer.daemon = True
        timer.start()
        raise SystemExit(EXIT_TERMINATED)

    return handle


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    beats = Heartbeats(float(env.get("PAPAYYA_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS)))
    try:
        token, module = env["PAPAYYA_RUN_TOKEN"], env["PAPAYYA_AGENT_MODULE"]
        if env.get("PAPAYYA_RUNTIME_SOCKET"):
            # No network but the control plane's socket: reach it through a loopback port.
            url = forward(env["PAPAYYA_RUNTIME_SOCKET"], (beats.every, beats.due))
        else:
            url = env["PAPAYYA_RUNTIME_URL"].rstrip("/")
            beats.after()
    except KeyError as missing:
        print(f"papayya runtime: {missing.args[0]} is not set", file=sys.stderr)
        return EXIT_USAGE
    os.environ.update({
        "OPENAI_BASE_URL": f"{url}/v1/llm/openai",
        "OPENAI_API_KEY": token,
        "ANTHROPIC_BASE_URL": f"{url}/v1/llm/anthropic",
        "ANTHROPIC_API_KEY": token,
    })  # fmt: skip
    try:
        load_module(module)
        spec = pick_agent(AGENTS, env.get("PAPAYYA_AGENT_FUNCTION"))
    except ConfigError as exc:
        print(f"papayya runtime: {exc}", file=sys.stderr)
        return EXIT_USAGE
    client = RuntimeClient(url, token, env.get("PAPAYYA_RUNTIME_SOCKET") or None)
    grace = float(env.get("PAPAYYA_GRACE_SECONDS", DEFAULT_GRACE_SECONDS))
    signal.signal(signal.SIGTERM, _on_sigterm(grace))
    run = client.get("run")
    remote = RemoteRun(client, run["run_id"])
    install(remote, remote.call_tool)
    beats.begin(client)
    try:
        output = run_agent(spec, run["input"])
    except Exception as exc:
        client.post("fail", {
            "error_type": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
        })  # fmt: skip
        return EXIT_FAILED
    finally:
        beats.stop.set()
    client.post("complete", {"output": _json(output)})
    return 0

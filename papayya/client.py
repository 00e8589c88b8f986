"""``Papayya`` and ``Client``: the published SDK's resource clients (``papayya==0.2.0``).

    from papayya import Papayya, Client

    p = Papayya()                       # PAPAYYA_API_KEY, PAPAYYA_BASE_URL
    run = p.runs.create("researcher", "hello")
    answer = Client().run_sync("researcher", "What is durable execution?")

Same constructors, attributes, methods and return shapes as published, over this server's API
(``papayya.api``); errors are ``papayya.errors.PapayyaAPIError`` with ``status``, as published.
"""

from __future__ import annotations

import time
from typing import Any

from papayya.api import APIClient, resolve_config
from papayya.errors import PapayyaAPIError
from papayya.resources import (
    Agents,
    ApiKeys,
    Batches,
    Deployments,
    Projects,
    Runs,
    Schedules,
    Secrets,
    Usage,
    Webhooks,
)

__all__ = ["Client", "Papayya", "PapayyaAPIError", "RunResult"]


class Papayya:
    """Resource-namespaced client: ``runs``, ``batches``, ``schedules``, ``webhooks``,
    ``agents``, ``deployments``, ``secrets``, ``projects``, ``api_keys``, ``usage``."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None) -> None:
        self._api = APIClient(resolve_config(api_key, base_url))
        self.runs = Runs(self._api)
        self.batches = Batches(self._api)
        self.schedules = Schedules(self._api)
        self.webhooks = Webhooks(self._api)
        self.agents = Agents(self._api)
        self.deployments = Deployments(self._api)
        self.secrets = Secrets(self._api)
        self.projects = Projects(self._api)
        self.api_keys = ApiKeys(self._api)
        self.usage = Usage(self._api)

    def close(self) -> None:
        """Close the underlying HTTP connection."""
        self._api.close()

    def __enter__(self) -> Papayya:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


class RunResult(str):
    """The output of a synchronous run, as a string, with ``run_id``, ``status`` and
    ``output`` as attributes."""

    output: str
    run_id: str
    status: str

    def __new__(cls, output: str, run_id: str, status: str) -> RunResult:
        instance = super().__new__(cls, output)
        instance.output = output
        instance.run_id = run_id
        instance.status = status
        return instance


class Client:
    """Triggering and following runs of configured agents (the built-in agent loop)."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None) -> None:
        self._api = APIClient(resolve_config(api_key=api_key, base_url=base_url))

    def run(
        self,
        agent_id: str,
        input: Any,
        *,
        model: str = "gpt-4o-mini",
        system_prompt: str = "You are a helpful assistant.",
        max_steps: int = 50,
        budget_cents: int = 500,
    ) -> dict[str, Any]:
        """Start a run and return it (``queued``)."""
        return self._api.trigger_run(
            agent_id=agent_id,
            model=model,
            system_prompt=system_prompt,
            input_data={"message": input} if isinstance(input, str) else input,
            max_steps=max_steps,
            budget_cents=budget_cents,
        )

    def get_status(self, run_id: str) -> dict[str, Any]:
        return self._api.get_run(run_id)

    def get_steps(self, run_id: str) -> list[dict[str, Any]]:
        return self._api.get_steps(run_id)

    def run_sync(
        self,
        agent_id: str,
        input: Any,
        *,
        model: str = "gpt-4o-mini",
        system_prompt: str = "You are a helpful assistant.",
        max_steps: int = 50,
        budget_cents: int = 500,
        timeout: float = 300,
        poll_interval: float = 2,
    ) -> RunResult:
        """Start a run and wait for its end: its output as a ``RunResult``.

        ``TimeoutError`` if it has not ended within ``timeout`` seconds; ``PapayyaAPIError``
        (400) if it failed, was cancelled or ran out of budget (published: it waits for the
        timeout on ``budget_exceeded``, a status it does not know)."""
        run = self.run(
            agent_id,
            input,
            model=model,
            system_prompt=system_prompt,
            max_steps=max_steps,
            budget_cents=budget_cents,
        )
        run_id = run["id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get_status(run_id)
            if status["status"] == "completed":
                return RunResult(status.get("output", ""), run_id, "completed")
            if status["status"] in ("failed", "cancelled", "budget_exceeded"):
                error = status.get("error_message", status["status"])
                raise PapayyaAPIError(400, f"Run {status['status']}: {error}")
            time.sleep(poll_interval)
        raise TimeoutError(f"Run {run_id} did not complete within {timeout}s")

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._api.cancel_run(run_id)

    def close(self) -> None:
        self._api.close()

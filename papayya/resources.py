"""The resource clients of ``Papayya`` (``papayya.resources`` of ``papayya==0.2.0``).

The published methods with their signatures, over ``papayya.api.APIClient``; each returns the
server's JSON as is (a dict, or a list for a list, ``None`` for a delete). Routes that this
server does not serve (batches, the dead-letter queue) are still sent, and answer
``PapayyaAPIError`` 404 ``route_not_supported``, so code that uses them learns why.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Iterator
from typing import Any

from papayya.api import APIClient, _segment

__all__ = [
    "Agents", "ApiKeys", "Batches", "Deployments", "Projects", "Runs", "Schedules",
    "Secrets", "Usage", "Webhooks",
]  # fmt: skip

Json = dict[str, Any]
# The methods named ``list`` shadow the builtin inside the classes.
_list = builtins.list


def _given(**fields: Any) -> Json:
    """The fields that were given (published: a falsy value is left out)."""
    return {k: v for k, v in fields.items() if v}


class _Resource:
    def __init__(self, api: APIClient) -> None:
        self._api = api


class Agents(_Resource):
    def create(
        self,
        name: str,
        slug: str,
        project_id: str,
        *,
        config: Json | None = None,
        description: str | None = None,
    ) -> Json:
        body = {"name": name, "slug": slug, "project_id": project_id}
        body |= _given(config=config, description=description)
        return self._api._request("POST", "/v1/agents", json=body)  # type: ignore[no-any-return]

    def list(self, project_id: str | None = None) -> _list[Json]:
        return self._api.list_agents(project_id)

    def get(self, agent_id: str) -> Json:
        return self._api.get_agent(agent_id)

    def update(self, agent_id: str, **kwargs: Any) -> Json:
        path = f"/v1/agents/{_segment(agent_id)}"
        return self._api._request("PATCH", path, json=kwargs)  # type: ignore[no-any-return]


class ApiKeys(_Resource):
    def create(self, project_id: str, name: str) -> Json:
        return self._api.create_api_key(project_id, name)

    def list(self, project_id: str) -> _list[Json]:
        return self._api._list(f"/v1/projects/{_segment(project_id)}/api-keys")

    def revoke(self, project_id: str, key_id: str) -> None:
        path = f"/v1/projects/{_segment(project_id)}/api-keys/{_segment(key_id)}"
        self._api._request("DELETE", path)


class Deployments(_Resource):
    def create(
        self,
        agent_id: str,
        tarball: bytes,
        *,
        runtime: str = "python",
        entrypoint: str = "agent.py",
    ) -> Json:
        return self._api.upload_deployment(agent_id, tarball, runtime, entrypoint)

    def get(self, deployment_id: str) -> Json:
        return self._api.get_deployment(deployment_id)

    def list(self, agent_id: str) -> _list[Json]:
        return self._api.list_deployments(agent_id)


class Projects(_Resource):
    def create(self, name: str, slug: str) -> Json:
        return self._api.create_project(name, slug)

    def list(self) -> _list[Json]:
        return self._api.list_projects()

    def get(self, project_id: str) -> Json:
        return self._api._request("GET", f"/v1/projects/{_segment(project_id)}")  # type: ignore[no-any-return]

    def update(self, project_id: str, **kwargs: Any) -> Json:
        path = f"/v1/projects/{_segment(project_id)}"
        return self._api._request("PATCH", path, json=kwargs)  # type: ignore[no-any-return]

    def delete(self, project_id: str) -> None:
        self._api._request("DELETE", f"/v1/projects/{_segment(project_id)}")


class Runs(_Resource):
    def create(
        self,
        agent_id: str,
        input: Any,
        *,
        model: str | None = None,
        max_steps: int | None = None,
        budget_cents: int | None = None,
        callback_url: str | None = None,
    ) -> Json:
        body = {"input": input} | _given(
            model=model, max_steps=max_steps, budget_cents=budget_cents, callback_url=callback_url
        )
        path = f"/v1/agents/{_segment(agent_id)}/runs"
        return self._api._request("POST", path, json=body)  # type: ignore[no-any-return]

    def get(self, run_id: str) -> Json:
        return self._api.get_run(run_id)

    def list(self) -> _list[Json]:
        return self._api._list("/v1/runs")

    def cancel(self, run_id: str) -> Json:
        return self._api.cancel_run(run_id)

    def replay(self, run_id: str, *, from_step: int, latest: bool = False) -> Json:
        """Replay a run from a step (``latest``: the published version-mismatch flag)."""
        body = {"from_step": from_step, "allow_version_mismatch": latest}
        path = f"/v1/runs/{_segment(run_id)}/replay"
        return self._api._request("POST", path, json=body)  # type: ignore[no-any-return]

    def steps(self, run_id: str) -> _list[Json]:
        return self._api.get_steps(run_id)

    def stream(self, run_id: str, *, from_step: int | None = None) -> Iterator[Json]:
        """The run's events (``{event, data, id?}``) as they happen, until it ends."""
        last = None if from_step is None else str(from_step)
        return self._api._stream(f"/v1/runs/{_segment(run_id)}/events", last)

    def dlq_skip(self, run_id: str) -> Json:
        return self._dlq(run_id, "skip")

    def dlq_acknowledge(self, run_id: str) -> Json:
        return self._dlq(run_id, "acknowledge")

    def dlq_replay(self, run_id: str) -> Json:
        return self._dlq(run_id, "replay")

    def _dlq(self, run_id: str, action: str) -> Json:
        path = f"/v1/runs/{_segment(run_id)}/dlq/{action}"
        return self._api._request("POST", path)  # type: ignore[no-any-return]


_TERMINAL_BATCH_STATUSES = frozenset({"completed", "failed", "cancelled", "paused", "partial"})


class Batches(_Resource):
    """The hosted ``/v1/batches`` surface: not served here (404 ``route_not_supported``)."""

    def create(
        self,
        agent_id: str,
        items: _list[Json],
        *,
        name: str | None = None,
        budget_cents_cap: int | None = None,
        concurrency_cap: int | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Json:
        body = {"agent_id": agent_id, "items": items} | self._options(
            name, budget_cents_cap, concurrency_cap, callback_url, idempotency_key
        )
        return self._api._request("POST", "/v1/batches", json=body)  # type: ignore[no-any-return]

    def create_stream(
        self,
        agent_id: str,
        items: Iterable[Json],
        *,
        name: str | None = None,
        budget_cents_cap: int | None = None,
        concurrency_cap: int | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Json:
        options = self._options(
            name, budget_cents_cap, concurrency_cap, callback_url, idempotency_key
        )
        return self.create(agent_id, _list(items), **options)

    @staticmethod
    def _options(
        name: str | None,
        budget_cents_cap: int | None,
        concurrency_cap: int | None,
        callback_url: str | None,
        idempotency_key: str | None,
    ) -> Json:
        given = {
            "name": name,
            "budget_cents_cap": budget_cents_cap,
            "concurrency_cap": concurrency_cap,
            "callback_url": callback_url,
            "idempotency_key": idempotency_key,
        }
        return {k: v for k, v in given.items() if v is not None}

    def get(self, batch_id: str) -> Json:
        return self._api._request("GET", f"/v1/batches/{_segment(batch_id)}")  # type: ignore[no-any-return]

    def list(
        self, *, status: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> _list[Json]:
        params = {"status": status, "limit": limit, "offset": offset}
        return self._api._request("GET", "/v1/batches", params=params)  # type: ignore[no-any-return]

    def runs(
        self,
        batch_id: str,
        *,
        status: str | None = None,
        page: int | None = None,
        limit: int | None = None,
    ) -> _list[Json]:
        params = {"status": status, "page": page, "limit": limit}
        path = f"/v1/batches/{_segment(batch_id)}/runs"
        return self._api._request("GET", path, params=params)  # type: ignore[no-any-return]

    def cancel(self, batch_id: str) -> Json:
        path = f"/v1/batches/{_segment(batch_id)}/cancel"
        return self._api._request("POST", path)  # type: ignore[no-any-return]

    def retry_failed(self, batch_id: str) -> Json:
        path = f"/v1/batches/{_segment(batch_id)}/retry-failed"
        return self._api._request("POST", path)  # type: ignore[no-any-return]

    def dlq(self, batch_id: str) -> _list[Json]:
        return self._api._request("GET", f"/v1/batches/{_segment(batch_id)}/dlq")  # type: ignore[no-any-return]

    def wait(self, batch_id: str, *, timeout: float = 3600, poll_interval: float = 5) -> Json:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = self.get(batch_id)
            if batch.get("status") in _TERMINAL_BATCH_STATUSES:
                return batch
            time.sleep(poll_interval)
        raise TimeoutError(f"Batch {batch_id} did not reach terminal status within {timeout}s")

    def stream_results(
        self, batch_id: str, *, poll_interval: float = 2, include_failed: bool = False
    ) -> Iterator[Json]:
        self.get(batch_id)  # not served: raises 404 route_not_supported
        yield from ()


class Schedules(_Resource):
    def create(
        self,
        agent_id: str,
        cron: str,
        *,
        timezone: str | None = None,
        input: str | None = None,
        max_steps: int | None = None,
        budget_cents: int | None = None,
    ) -> Json:
        body = {"cron_expression": cron} | _given(
            timezone=timezone, input=input, max_steps=max_steps, budget_cents=budget_cents
        )
        path = f"/v1/agents/{_segment(agent_id)}/schedules"
        return self._api._request("POST", path, json=body)  # type: ignore[no-any-return]

    def list(self, agent_id: str | None = None) -> _list[Json]:
        if agent_id:
            return self._api.list_schedules(agent_id)
        return self._api._list("/v1/schedules")

    def get(self, schedule_id: str) -> Json:
        path = f"/v1/schedules/{_segment(schedule_id)}"
        return self._api._request("GET", path)  # type: ignore[no-any-return]

    def update(self, schedule_id: str, **kwargs: Any) -> Json:
        names = {"cron": "cron_expression"}
        fields = ("cron", "timezone", "input", "max_steps", "budget_cents", "enabled")
        body = {names.get(k, k): kwargs[k] for k in fields if k in kwargs}
        path = f"/v1/schedules/{_segment(schedule_id)}"
        return self._api._request("PATCH", path, json=body)  # type: ignore[no-any-return]

    def delete(self, schedule_id: str) -> None:
        self._api.delete_schedule(schedule_id)

    def enable(self, schedule_id: str) -> Json:
        return self.update(schedule_id, enabled=True)

    def disable(self, schedule_id: str) -> Json:
        return self.update(schedule_id, enabled=False)


class Secrets(_Resource):
    def set(self, project_id: str, name: str, value: str) -> Json:
        return self._api.set_secret(project_id, name, value)

    def list(self, project_id: str) -> _list[Json]:
        return self._api.list_secrets(project_id)

    def delete(self, project_id: str, name: str) -> None:
        self._api.delete_secret(project_id, name)


class Usage(_Resource):
    def summary(self, *, from_date: str | None = None, to_date: str | None = None) -> Json:
        params = {"from": from_date, "to": to_date}
        return self._api._request("GET", "/v1/usage", params=params)  # type: ignore[no-any-return]

    def breakdown(self, *, from_date: str | None = None, to_date: str | None = None) -> Any:
        """Ours is an object (``by_agent``, ``by_model``, ``by_agent_model``), where the hosted
        API answers a list (docs/compatibility.md)."""
        params = {"from": from_date, "to": to_date}
        return self._api._request("GET", "/v1/usage/breakdown", params=params)


class Webhooks(_Resource):
    def create(self, agent_id: str, name: str, *, description: str | None = None) -> Json:
        body = {"name": name} | _given(description=description)
        path = f"/v1/agents/{_segment(agent_id)}/webhooks"
        return self._api._request("POST", path, json=body)  # type: ignore[no-any-return]

    def list(self, agent_id: str) -> _list[Json]:
        return self._api.list_webhooks(agent_id)

    def delete(self, webhook_id: str) -> None:
        self._api.delete_webhook(webhook_id)

"""A control plane whose gateway forwards to a fake provider, and runs to call it with."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest

from fakellm import FakeConfig
from fakellm.testing import FakeServer, running_fake
from papayya import runtokens
from papayya.domain import events as ev
from papayya.domain.state import RunState
from papayya.runs import Runs
from tests.support.api import Api, running_api
from web import keys

PROVIDER_KEY = "sk-real-provider-key"


@dataclass
class Gateway:
    api: Api
    fake: FakeServer
    clients: list[Any] = field(default_factory=list)

    def openai(self, token: str, sync: bool = False) -> Any:
        kind = openai.OpenAI if sync else openai.AsyncOpenAI
        client = kind(base_url=self.openai_url, api_key=token, max_retries=0)
        self.clients.append(client)
        return client

    def anthropic(self, token: str) -> Any:
        client = anthropic.AsyncAnthropic(base_url=self.anthropic_url, api_key=token, max_retries=0)
        self.clients.append(client)
        return client

    @property
    def runs(self) -> Runs:
        return self.api.app[keys.RUNS]

    @property
    def openai_url(self) -> str:
        return f"{self.api.url}/v1/llm/openai"

    @property
    def anthropic_url(self) -> str:
        return f"{self.api.url}/v1/llm/anthropic"

    async def project_id(self) -> str:
        pool = self.api.app[keys.STORE].pool
        return str(await pool.fetchval("SELECT project_id FROM projects WHERE name='default'"))

    async def start_run(self, **queued: Any) -> tuple[RunState, str]:
        """A running run and its run token, as a worker would make them."""
        run_id = queued.pop("run_id", f"run_{uuid.uuid4().hex[:12]}")
        event = ev.RunQueued(
            run_id=run_id, project_id=await self.project_id(), agent_id="agent-gw", **queued
        )
        state = await self.runs.queue(event)
        state = await self.runs.append(state, [ev.RunStarted(attempt=1)])
        return state, self.token(run_id, 1)

    def token(self, run_id: str, attempt: int) -> str:
        return runtokens.mint(self.api.app[keys.RUN_TOKEN_SECRET], run_id, attempt)


@asynccontextmanager
async def running_gateway(
    dsn: str, monkeypatch: pytest.MonkeyPatch, config: FakeConfig | None = None
) -> AsyncIterator[Gateway]:
    async with running_fake(config) as fake:
        monkeypatch.setenv("PAPAYYA_OPENAI_BASE_URL", fake.openai_base_url)
        monkeypatch.setenv("PAPAYYA_OPENAI_API_KEY", PROVIDER_KEY)
        monkeypatch.setenv("PAPAYYA_ANTHROPIC_BASE_URL", fake.anthropic_base_url)
        monkeypatch.setenv("PAPAYYA_ANTHROPIC_API_KEY", PROVIDER_KEY)
        async with running_api(dsn, monkeypatch) as api:
            yield Gateway(api, fake)

"""The fake's mutable state: config, the scripted reply queue and request statistics."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any, Final

import msgspec
from aiohttp import web

from fakellm.config import FakeConfig, Reply
from fakellm.errors import Provider, ProviderError
from fakellm.prompt import Prompt
from fakellm.turn import Turn, decide


@dataclass
class RecordedRequest:
    """One provider request as the fake saw it; ``status`` is set once it is answered."""

    method: str
    path: str
    model: str | None
    stream: bool
    api_key: str | None
    headers: dict[str, str]
    body: Any
    status: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "model": self.model,
            "stream": self.stream,
            "api_key": self.api_key,
            "headers": self.headers,
            "body": self.body,
            "status": self.status,
        }


@dataclass
class FakeStats:
    """Counts of every provider request (admin routes excluded) and the most recent ones."""

    keep: int = 100
    total: int = 0
    by_route: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    by_api_key: Counter[str] = field(default_factory=Counter)
    requests: deque[RecordedRequest] = field(init=False)

    def __post_init__(self) -> None:
        self.requests = deque(maxlen=self.keep)

    @property
    def last(self) -> RecordedRequest | None:
        return self.requests[-1] if self.requests else None

    def record(self, request: RecordedRequest) -> None:
        self.total += 1
        self.by_route[request.path] += 1
        if request.model is not None:
            self.by_model[request.model] += 1
        if request.api_key is not None:
            self.by_api_key[request.api_key] += 1
        self.requests.append(request)

    def answered(self, request: RecordedRequest, status: int) -> None:
        request.status = status
        self.by_status[status] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_route": dict(self.by_route),
            "by_model": dict(self.by_model),
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "by_api_key": dict(self.by_api_key),
            "requests": [r.to_json() for r in self.requests],
        }


class FakeState:
    """Everything a running fake knows; reach it as ``app[FAKE]``."""

    def __init__(self, config: FakeConfig) -> None:
        self.initial = config
        self.config = config
        self.script: deque[Reply] = deque()
        self.stats = FakeStats(keep=config.keep_requests)
        self._rng = random.Random(config.errors.seed)

    def configure(self, patch: dict[str, Any] | None = None, **changes: Any) -> FakeConfig:
        """Change the config and return it: ``patch`` is JSON-shaped, as ``POST /_fake/config``
        takes it (``usage``, ``latency`` and ``errors`` merge key by key); a keyword replaces its
        field whole, e.g. ``configure(usage=Usage(cached_tokens=10))``."""
        new = self.config.patched({**(patch or {}), **msgspec.to_builtins(changes)})
        if new.errors.seed != self.config.errors.seed:
            self._rng = random.Random(new.errors.seed)
        self.config = new
        return new

    def reset(self) -> None:
        """Back to the config the app was created with; empty script and statistics."""
        self.config = self.initial
        self.script.clear()
        self.stats = FakeStats(keep=self.initial.keep_requests)
        self._rng = random.Random(self.initial.errors.seed)

    async def admit(self, provider: Provider, model: str) -> None:
        """Wait the time to first byte, then refuse unknown models and injected failures."""
        config = self.config
        if config.latency.first_byte > 0:
            await asyncio.sleep(config.latency.first_byte)
        if config.models is not None and model not in config.models:
            raise ProviderError(404, _unknown_model(provider, model), code="model_not_found")
        failure = self.injected_failure()
        if failure is not None:
            raise failure

    async def take_turn(self, provider: Provider, prompt: Prompt) -> Turn:
        """Admit the request, then answer it with the next scripted reply or the defaults."""
        await self.admit(provider, prompt.model)
        reply = self.script.popleft() if self.script else None
        if reply is None or reply.failure is None:
            return decide(prompt, self.config, reply)
        f = reply.failure
        error = ProviderError(f.status, f.message, retry_after=f.retry_after)
        if f.after_events is None or not prompt.stream:
            raise error
        return replace(decide(prompt, self.config), interruption=(f.after_events, error))

    def injected_failure(self) -> ProviderError | None:
        """The configured failure for this request, if it is one that should fail."""
        errors = self.config.errors
        if errors.fail_next > 0:
            self.config = self.config.patched({"errors": {"fail_next": errors.fail_next - 1}})
        elif not (errors.probability > 0 and self._rng.random() < errors.probability):
            return None
        return ProviderError(errors.status, errors.message, retry_after=errors.retry_after)


def _unknown_model(provider: Provider, model: str) -> str:
    if provider == "anthropic":
        return f"model: {model}"
    return f"The model `{model}` does not exist or you do not have access to it."


FAKE: Final = web.AppKey("fake", FakeState)

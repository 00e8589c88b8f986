"""Where metered model calls go: the providers' base URLs and keys, and how long a call may
take. One configuration for the gateway (``web.gateway``) and the built-in agent loop
(``workers.agentloop``), so both reach the same provider with the same key."""

from __future__ import annotations

import os
from collections.abc import Mapping

from papayya.domain.handover import CALL_TIMEOUT_SECONDS
from papayya.errors import InvalidInput
from papayya.metering import providers as pv
from papayya.metering.meter import Upstream

DEFAULT_UPSTREAMS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}


def upstreams_from_env(env: Mapping[str, str] | None = None) -> dict[pv.Provider, Upstream]:
    env = os.environ if env is None else env
    return {
        "openai": Upstream(
            env.get("PAPAYYA_OPENAI_BASE_URL") or DEFAULT_UPSTREAMS["openai"],
            env.get("PAPAYYA_OPENAI_API_KEY"),
        ),
        "anthropic": Upstream(
            env.get("PAPAYYA_ANTHROPIC_BASE_URL") or DEFAULT_UPSTREAMS["anthropic"],
            env.get("PAPAYYA_ANTHROPIC_API_KEY"),
        ),
    }


def call_timeout(env: Mapping[str, str] | None = None) -> float:
    """Seconds a model call may take, first byte to last (``PAPAYYA_GATEWAY_TIMEOUT_SECONDS``).
    A call cut off by it is counted at its reservation, like any call whose usage is lost."""
    env = os.environ if env is None else env
    raw = env.get("PAPAYYA_GATEWAY_TIMEOUT_SECONDS")
    if not raw:
        return CALL_TIMEOUT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= CALL_TIMEOUT_SECONDS:
        # The sweeper settles reservations older than the default: no call may outlive it.
        raise InvalidInput(
            f"PAPAYYA_GATEWAY_TIMEOUT_SECONDS must be a number of seconds in (0, "
            f"{CALL_TIMEOUT_SECONDS:g}], not {raw!r}"
        )
    return seconds

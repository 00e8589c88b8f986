"""Papayya: durable execution and cost control for AI agents.

``from papayya import papayya`` gives the SDK client; ``Papayya`` and ``Client`` the published
SDK's resource clients (``papayya.client``); ``agent``, ``tool`` and ``current_run`` the agent
code API (``papayya.agentapi``, standard library only). It is imported lazily so that the
in-container pieces of this package stay importable with the standard library alone.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "papayya":
        from papayya.sdk import papayya

        return papayya
    if name in ("Papayya", "Client", "RunResult", "PapayyaAPIError"):
        from papayya import client

        return getattr(client, name)
    if name in ("PapayyaRun", "DurableRunResult", "CreditExhausted", "BudgetExceeded"):
        from papayya import sdk  # the published SDK's names, for code written for it

        return getattr(sdk, name)
    if name in ("agent", "tool", "current_run"):
        from papayya import agentapi

        return getattr(agentapi, name)
    raise AttributeError(f"module 'papayya' has no attribute {name!r}")

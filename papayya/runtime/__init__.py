"""The in-container runtime (``python -m papayya.runtime``): runs one ``@agent`` for one run.

Standard library only. It points the OpenAI and Anthropic SDKs at the gateway with the run
token, records every ``@tool`` call and ``run.task`` through the runtime API (answered from the
recording when a resumed attempt repeats them), heartbeats, and reports the outcome.
"""

from papayya.runtime.main import main, run_agent

__all__ = ["main", "run_agent"]

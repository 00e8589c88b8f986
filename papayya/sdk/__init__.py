"""The local SDK: ``client = papayya(); run = client.run("my-agent"); run.task(label, fn)()``.

Also under the published SDK's names: ``PapayyaRun`` (``Run``), ``DurableRunResult``,
``TaskEntry``, ``CreditExhausted`` and ``BudgetExceeded``."""

from papayya.errors import BudgetExceeded, CreditExhausted
from papayya.sdk.client import Papayya, papayya
from papayya.sdk.results import DurableRunResult, TaskEntry
from papayya.sdk.run import Run

PapayyaRun = Run

__all__ = [
    "BudgetExceeded",
    "CreditExhausted",
    "DurableRunResult",
    "Papayya",
    "PapayyaRun",
    "Run",
    "TaskEntry",
    "papayya",
]

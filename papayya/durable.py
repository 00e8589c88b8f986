"""``from papayya.durable import papayya``: the published SDK's import path for durable runs,
so code written for it imports ours unchanged. The stores it also exports (memory, file,
SQLite, cloud) are not here: our client writes to Postgres, or through a server."""

from papayya.sdk.client import Papayya as PapayyaClient
from papayya.sdk.client import papayya
from papayya.sdk.results import DurableRunResult, TaskEntry
from papayya.sdk.run import Run as PapayyaRun

__all__ = ["DurableRunResult", "PapayyaClient", "PapayyaRun", "TaskEntry", "papayya"]

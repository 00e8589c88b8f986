"""The local SDK: ``client = papayya(); run = client.run("my-agent"); run.task(label, fn)``."""

from papayya.sdk.client import Papayya, papayya
from papayya.sdk.run import Run

__all__ = ["Papayya", "Run", "papayya"]

"""Run tokens: the credential an agent's LLM calls and runtime reports carry.

``prt_<run id>.<attempt>.<signature>``, signed with a server secret. A token is only honoured
while its run is running *in that attempt*, so it dies with the run's terminal status or the
attempt's replacement after a crash, without a revocation list.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final

PREFIX: Final = "prt_"


def mint(secret: bytes, run_id: str, attempt: int) -> str:
    return f"{PREFIX}{run_id}.{attempt}.{_sign(secret, run_id, attempt)}"


def verify(secret: bytes, token: str | None) -> tuple[str, int] | None:
    """The token's (run id, attempt) if its signature holds, else ``None``."""
    # Tokens are ASCII, and compare_digest refuses (TypeError) a str that is not.
    if not token or not token.startswith(PREFIX) or len(token) > 400 or not token.isascii():
        return None
    run_id, _, rest = token[len(PREFIX) :].rpartition(".")
    run_id, _, attempt_text = run_id.rpartition(".")
    if not run_id or not attempt_text.isdigit():
        return None
    attempt = int(attempt_text)
    if not hmac.compare_digest(rest, _sign(secret, run_id, attempt)):
        return None
    return run_id, attempt


def _sign(secret: bytes, run_id: str, attempt: int) -> str:
    digest = hmac.new(secret, f"{run_id}.{attempt}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")

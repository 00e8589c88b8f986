"""Key guessing: a sliding window of failed API-key authentications per remote address.

An address with ``limit`` failures within ``window`` seconds is refused (429, ``Retry-After``)
on every API-key route until its oldest failure leaves the window, *before* its key is looked
up, so a blocked guesser learns nothing and costs no query. Keys that authenticated recently
in this process are still let through, so one misbehaving client behind a shared address
does not lock out the others that use valid keys. The state is per process and in memory:
with N API processes an address gets at most N × ``limit`` guesses per window.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

# Bounds on memory whatever the traffic: addresses tracked and recently valid keys kept.
MAX_ADDRESSES: Final = 100_000
MAX_TRUSTED_KEYS: Final = 10_000


@dataclass
class AuthLimiter:
    """``limit`` failures per ``window`` seconds per address; ``limit`` 0 turns it off."""

    limit: int = 20
    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    _trusted: OrderedDict[bytes, None] = field(default_factory=OrderedDict)

    def retry_after(self, address: str, key: str | None) -> int | None:
        """Seconds until ``address`` may try again, or ``None`` if this request may go on."""
        if self.limit <= 0:
            return None
        failures = self._recent(address)
        if failures is None or len(failures) < self.limit:
            return None
        if key is not None and _digest(key) in self._trusted:
            return None
        return max(1, math.ceil(failures[0] + self.window - self.clock()))

    def failed(self, address: str) -> None:
        if self.limit <= 0:
            return
        failures = self._recent(address) or deque(maxlen=self.limit)
        failures.append(self.clock())
        self._failures[address] = failures
        self._failures.move_to_end(address)
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        digest = _digest(key)
        self._trusted[digest] = None
        self._trusted.move_to_end(digest)
        while len(self._trusted) > MAX_TRUSTED_KEYS:
            self._trusted.popitem(last=False)

    def _recent(self, address: str) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        horizon = self.clock() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode(errors="surrogatepass")).digest()

"""Content addressing for bulky content: a payload's reference is its SHA-256."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from eventstore.types import MAX_PAYLOAD_BYTES
from papayya.errors import InvalidInput, PayloadTooLarge

_REF = re.compile(r"^sha256:[0-9a-f]{64}$")


def payload_ref(content: Any) -> str:
    """Validate content and return its reference ``sha256:<hex>``."""
    if not isinstance(content, bytes | bytearray | memoryview):
        raise InvalidInput("payload content must be bytes")
    if len(content) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"payload is larger than {MAX_PAYLOAD_BYTES} bytes")
    return "sha256:" + hashlib.sha256(content).hexdigest()


def check_ref(ref: Any) -> str:
    if not isinstance(ref, str) or not _REF.match(ref):
        raise InvalidInput("a payload reference looks like 'sha256:<64 hex digits>'")
    return ref

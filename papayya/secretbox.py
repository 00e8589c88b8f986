"""Encryption at rest of project secrets (docs/security.md, "Project secrets").

Each value is sealed with AES-256-GCM under the server's secrets key, with a fresh 96-bit
nonce, and with its project and name as associated data: a sealed value copied to another
row (another project, another name) no longer opens. A sealed value is ``nonce || ciphertext
|| tag``; its row also keeps the key's id (the first bytes of the key's SHA-256), so a server
holding another key says so instead of failing on every value.

The key is ``PAPAYYA_SECRETS_KEY`` (32 bytes, URL-safe base64, as ``papayya secrets new-key``
prints) or, where unset, the file ``secrets.key`` under the data directory, made on first use
with mode 0600. Servers that share a database on several machines must share the key: set
the variable on each of them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from papayya.errors import PapayyaError

KEY_ENV: Final = "PAPAYYA_SECRETS_KEY"
KEY_FILE: Final = "secrets.key"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12


class SecretsKeyError(PapayyaError):
    """The project secrets cannot be opened with this server's secrets key."""


def new_key() -> str:
    """A fresh key, as ``PAPAYYA_SECRETS_KEY`` holds it."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def parse_key(text: str) -> bytes:
    """The key's bytes; ``SecretsKeyError`` unless it is 32 bytes in URL-safe base64."""
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise SecretsKeyError(
            f"a secrets key is {KEY_BYTES} bytes in URL-safe base64 (papayya secrets new-key)"
        )
    return raw


def key_file(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


def load_key(configured: str | None, data_dir: Path) -> bytes:
    """The configured key (``PAPAYYA_SECRETS_KEY``), else the data directory's, made once
    (created exclusively, so that processes starting together agree on one)."""
    if configured:
        return parse_key(configured)
    path = key_file(data_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(new_key() + "\n")
    return parse_key(path.read_text())


def write_key_file(data_dir: Path, key: str) -> Path:
    """Replace the data directory's key file with ``key`` (mode 0600, atomically)."""
    path = key_file(data_dir)
    fresh = path.with_suffix(".new")
    with contextlib.suppress(FileNotFoundError):
        fresh.unlink()
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key.strip() + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(fresh, path)
    return path


def _aad(project_id: str, name: str) -> bytes:
    return f"{project_id}\x00{name}".encode()


class SecretBox:
    """Seals and opens project secrets with one key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16]

    def __repr__(self) -> str:  # never the key
        return f"SecretBox(key_id={self.key_id!r})"

    def seal(self, project_id: str, name: str, value: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, value.encode(), _aad(project_id, name))

    def open(self, project_id: str, name: str, sealed: bytes, key_id: str) -> str:
        if key_id != self.key_id:
            raise SecretsKeyError(
                f"project secret {name!r} is sealed with another secrets key ({key_id}, this "
                f"server has {self.key_id}): set {KEY_ENV} to the key that sealed it"
            )
        try:
            plain = self._aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _aad(project_id, name)
            )
        except InvalidTag:
            raise SecretsKeyError(f"project secret {name!r} does not open with this key") from None
        return plain.decode()

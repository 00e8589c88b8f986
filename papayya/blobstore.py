"""Where deployment bundles are kept: a local directory by default, S3 when configured.

Every blob is written and read with its SHA-256. A write is checked before it is sent and by
the store that takes it (S3 verifies ``ChecksumSHA256`` before it accepts the object; the
local adapter hashes what it wrote); a read is hashed again before the caller sees it, so a
bundle that rotted or was swapped in storage fails loudly instead of being built.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final, Protocol

from papayya.config import Config
from papayya.errors import NotFound, PapayyaError

CHUNK: Final = 1024 * 1024
_KEY: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class ChecksumMismatch(PapayyaError):
    """The blob's content does not match its SHA-256."""

    code = "checksum_mismatch"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_key(key: str) -> str:
    """Keys are relative paths of plain names: nothing a directory adapter could escape by."""
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"not a blob key: {key!r}")
    return key


class BlobStore(Protocol):
    name: str

    async def put(self, key: str, source: Path, sha256: str) -> None:
        """Store the file ``source`` under ``key``; ``sha256`` is its content's hash."""
        ...

    async def get(self, key: str, target: Path, sha256: str) -> None:
        """Write the blob to ``target``, verified against ``sha256``."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


class LocalBlobStore:
    """Blobs as files under a directory (``<PAPAYYA_DATA_DIR>/blobs``)."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, source: Path, sha256: str) -> None:
        await asyncio.to_thread(self._put, self.path(key), source, sha256)

    @staticmethod
    def _put(target: Path, source: Path, sha256: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            if sha256_file(Path(tmp)) != sha256:
                raise ChecksumMismatch(f"{target.name}: the stored copy does not match {sha256}")
            os.replace(tmp, target)  # atomic: readers see the whole blob or none
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def get(self, key: str, target: Path, sha256: str) -> None:
        path = self.path(key)
        if not path.is_file():
            raise NotFound(f"blob {key} not found")
        await asyncio.to_thread(shutil.copyfile, path, target)
        actual = await asyncio.to_thread(sha256_file, target)
        if actual != sha256:
            raise ChecksumMismatch(f"blob {key} has sha256 {actual}, expected {sha256}")

    async def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    async def close(self) -> None:
        pass


class S3BlobStore:
    """Blobs as objects of one bucket, through aioboto3 (credentials: the AWS default chain)."""

    name = "s3"

    def __init__(self, bucket: str, endpoint_url: str | None = None, region: str | None = None):
        import aioboto3

        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        # Credentials from the environment are read now: the server drops them from its
        # environment once started (workers/hardening.py), agents must not find them there.
        self._session = aioboto3.Session(
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def client(self) -> Any:
        async with self._lock:
            if self._client is None:
                self._client = await self._stack.enter_async_context(
                    self._session.client(
                        "s3", endpoint_url=self.endpoint_url, region_name=self.region
                    )
                )
        return self._client

    async def put(self, key: str, source: Path, sha256: str) -> None:
        s3 = await self.client()
        actual = await asyncio.to_thread(sha256_file, source)
        if actual != sha256:
            raise ChecksumMismatch(f"{source.name} has sha256 {actual}, expected {sha256}")
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        with source.open("rb") as body:
            # S3 recomputes the checksum and refuses the object if it differs.
            await s3.put_object(
                Bucket=self.bucket, Key=check_key(key), Body=body, ChecksumSHA256=checksum,
                Metadata={"sha256": sha256},
            )  # fmt: skip

    async def get(self, key: str, target: Path, sha256: str) -> None:
        s3 = await self.client()
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=check_key(key))
        except s3.exceptions.NoSuchKey:
            raise NotFound(f"blob {key} not found") from None
        digest = hashlib.sha256()
        body = response["Body"]
        try:
            with target.open("wb") as out:
                while chunk := await body.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        finally:
            body.close()
        if digest.hexdigest() != sha256:
            raise ChecksumMismatch(f"blob {key} has sha256 {digest.hexdigest()}, not {sha256}")

    async def exists(self, key: str) -> bool:
        s3 = await self.client()
        try:
            await s3.head_object(Bucket=self.bucket, Key=check_key(key))
        except s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    async def delete(self, key: str) -> None:
        s3 = await self.client()
        await s3.delete_object(Bucket=self.bucket, Key=check_key(key))

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


def from_config(config: Config) -> BlobStore:
    """S3 if a bucket is configured (``PAPAYYA_S3_BUCKET``, at ``PAPAYYA_S3_ENDPOINT`` if
    given), else a directory under the data dir."""
    if config.s3_bucket:
        return S3BlobStore(config.s3_bucket, config.s3_endpoint)
    return LocalBlobStore(config.data_dir / "blobs")

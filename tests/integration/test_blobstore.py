"""The blob store's two adapters pass one contract: a local directory, and S3 (moto's server,
reached through aioboto3 as a real bucket would be)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from papayya import blobstore
from papayya.blobstore import ChecksumMismatch, LocalBlobStore, S3BlobStore
from papayya.config import Config
from papayya.errors import NotFound
from tests.support.services import SERVICES_ENV, read_env


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """`make services`'s S3 server, or one of this module's own if it has not run."""
    if SERVICES_ENV.exists():
        yield read_env()["PAPAYYA_S3_ENDPOINT"]
        return
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3"])
async def store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[blobstore.BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "papayya")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "papayya")
    s3 = S3BlobStore(f"test-{uuid.uuid4().hex[:12]}", s3_endpoint)
    await (await s3.client()).create_bucket(Bucket=s3.bucket)
    yield s3
    await s3.close()


def blob(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    path = tmp_path / f"in-{uuid.uuid4().hex}"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


async def test_put_get_exists_delete(store: blobstore.BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    source, sha = blob(tmp_path, data)
    key = f"bundles/{sha}.tar.gz"
    assert not await store.exists(key)
    await store.put(key, source, sha)
    assert await store.exists(key)
    out = tmp_path / "out"
    await store.get(key, out, sha)
    assert out.read_bytes() == data
    await store.delete(key)
    assert not await store.exists(key)
    with pytest.raises(NotFound):
        await store.get(key, tmp_path / "gone", sha)


async def test_a_put_with_the_wrong_checksum_is_refused(
    store: blobstore.BlobStore, tmp_path: Path
) -> None:
    source, _ = blob(tmp_path, b"the real content")
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(Exception) as raised:
        await store.put("bundles/x.tar.gz", source, wrong)
    assert "checksum" in str(raised.value).lower() or isinstance(raised.value, ChecksumMismatch)
    assert not await store.exists("bundles/x.tar.gz")


async def test_a_blob_that_changed_in_storage_fails_its_read(
    store: blobstore.BlobStore, tmp_path: Path
) -> None:
    source, sha = blob(tmp_path, b"original bytes")
    await store.put("bundles/y.tar.gz", source, sha)
    tampered, tampered_sha = blob(tmp_path, b"swapped bytes!")
    await store.put("bundles/y.tar.gz", tampered, tampered_sha)  # someone overwrote it
    with pytest.raises(ChecksumMismatch):
        await store.get("bundles/y.tar.gz", tmp_path / "out", sha)


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a//b", "a/../b", "", ".hidden"])
async def test_keys_cannot_escape(tmp_path: Path, key: str) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    source, sha = blob(tmp_path, b"x")
    with pytest.raises(ValueError):
        await store.put(key, source, sha)


def test_the_adapter_follows_the_configuration(tmp_path: Path) -> None:
    assert isinstance(blobstore.from_config(Config(data_dir=tmp_path)), LocalBlobStore)
    s3 = blobstore.from_config(Config(s3_bucket="b", s3_endpoint="http://127.0.0.1:1"))
    assert isinstance(s3, S3BlobStore) and s3.endpoint_url == "http://127.0.0.1:1"

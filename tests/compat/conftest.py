"""Fixtures of the compatibility suite: the published SDK against a real control plane."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.api import Api
from tests.support.published import Published, published_venv


@pytest.fixture(scope="session")
def published_sdk() -> Path:
    """The venv with ``papayya==0.2.0`` from the index (built once, cached on disk)."""
    return published_venv()


@pytest.fixture
def published(published_sdk: Path, api: Api, tmp_path: Path) -> Published:
    return Published(published_sdk, api.url, api.key, tmp_path)

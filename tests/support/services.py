"""The services `make services` starts (DESIGN §11), as its .papayya/services.env names them."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SERVICES_ENV = ROOT / ".papayya" / "services.env"


def read_env(path: Path = SERVICES_ENV) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[name.strip()] = value.strip()
    return values


def services() -> dict[str, str]:
    """The services' variables; fails (never skips) when `make services` has not run, since
    CI runs it first. Deselect these tests locally with ``-m "not docker"``."""
    if not SERVICES_ENV.exists():
        pytest.fail(f"{SERVICES_ENV} is missing: run `make services` (or -m 'not docker')")
    return read_env()

"""``papayya worker`` and ``papayya scheduler`` refuse bad timing settings before they start
anything: a message, a non-zero exit, and no data directory (no embedded database) made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("command", ["worker", "scheduler"])
@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PAPAYYA_LEASE_SECONDS", "soon", "PAPAYYA_LEASE_SECONDS must be a number"),
        ("PAPAYYA_MAX_ATTEMPTS", "0", "PAPAYYA_MAX_ATTEMPTS must be a positive number"),
        ("PAPAYYA_HEARTBEAT_SECONDS", "-1", "PAPAYYA_HEARTBEAT_SECONDS must be a positive"),
        ("PAPAYYA_HEARTBEAT_SECONDS", "90", "the lease must be longer than the heartbeat"),
    ],
)
def test_bad_timing_is_refused_before_anything_starts(
    tmp_path: Path, command: str, variable: str, value: str, message: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env |= {"PAPAYYA_DATA_DIR": str(tmp_path / "data"), variable: value}
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", command],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert message in done.stderr
    assert not (tmp_path / "data").exists()

"""The fork server compiles the agent module once; each run still executes it, and a module
changed since is read again."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from papayya.runtime.main import _compiled, load_module, precompile


@pytest.fixture
def agent_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "precompiled_agent.py"
    path.write_text("import os\nLOADED = os.environ.get('PRECOMPILE_MARK', 'unset')\n")
    yield path
    sys.modules.pop("precompiled_agent", None)
    _compiled.pop(str(path), None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_precompile_runs_nothing_and_each_load_runs_the_module(
    agent_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    precompile(str(agent_file))
    assert "precompiled_agent" not in sys.modules
    assert str(agent_file) in _compiled
    monkeypatch.setenv("PRECOMPILE_MARK", "run 1")
    assert load_module(str(agent_file)).LOADED == "run 1"
    monkeypatch.setenv("PRECOMPILE_MARK", "run 2")  # module-level code sees each run's env
    module = load_module(str(agent_file))
    assert module.LOADED == "run 2"
    assert module.__file__ == str(agent_file)


def test_a_module_changed_since_is_read_again(agent_file: Path) -> None:
    precompile(str(agent_file))
    agent_file.write_text("LOADED = 'changed, and longer than before'\n")
    stat = agent_file.stat()
    os.utime(agent_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_module(str(agent_file)).LOADED == "changed, and longer than before"


def test_relative_paths_and_bad_source_are_left_to_the_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad_agent.py"
    bad.write_text("def broken(:\n")
    precompile(str(bad))
    precompile("relative_agent.py")
    assert str(bad) not in _compiled
    assert "relative_agent.py" not in _compiled

"""The layer rule (docs/architecture.md) holds on the tree, and its checker
(``scripts/check_layers.py``, also run by ``make lint``) catches each kind of breach."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from workers.builder import runtime_files

ROOT = Path(__file__).resolve().parents[2]


def _load_checker() -> ModuleType:
    # scripts/ is not a package: the checker runs as a script with the standard library only.
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts/check_layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


layers = _load_checker()
KNOWN_MODULES = {"web.models", "web.app", "workers.queue", "papayya.runs"}


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    path = module.replace(".", "/") + ("/__init__.py" if is_package else ".py")
    found = layers.check_source(path, module, source, KNOWN_MODULES, is_package)
    return [str(v) for v in found]


def test_the_tree_keeps_the_layer_rule() -> None:
    found, stale = layers.check(ROOT)
    assert [str(v) for v in found] == []
    assert stale == [], "KNOWN lists violations that are gone: remove them"


def test_a_known_violation_that_is_gone_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(layers.KNOWN, ("web.app", "workers.gone"), "fixed long ago")
    _, stale = layers.check(ROOT)
    assert ("web.app", "workers.gone") in stale


@pytest.mark.parametrize(
    ("module", "source", "imported", "rule"),
    [
        ("web.routes.x", "from workers.queue import RunQueue", "workers.queue", "web/ never"),
        ("web.x", "def lazy():\n    import workers.queue\n", "workers.queue", "web/ never"),
        ("web.x", "from server.app import init_app", "server.app", "web/ never"),
        ("workers.x", "from web import models", "web.models", "workers/ never"),
        ("workers.queue", "from ..web import models", "web.models", "workers/ never"),
        ("eventstore.x", "from papayya.runs import Runs", "papayya.runs", "eventstore/"),
        ("papayya.x", "from projections import runner", "projections", "papayya/ imports"),
        ("papayya.x", "from tests.support import x", "tests.support", "papayya/ imports"),
        ("projections.x", "import workers.queue", "workers.queue", "projections/"),
        ("fakellm.x", "from papayya.errors import Error", "papayya.errors", "fakellm/"),
        ("sql.x", "import papayya", "papayya", "sql/"),
        ("papayya.domain.x", "import asyncpg", "asyncpg", "no I/O"),
        ("papayya.domain.x", "import os.path", "os.path", "no I/O"),
        ("papayya.domain.x", "from eventstore import postgres", "eventstore", "no I/O"),
        ("papayya.domain.x", "from papayya.runs import Runs", "papayya.runs", "no I/O"),
        ("papayya.runtime.x", "import msgspec", "msgspec", "standard library only"),
        ("papayya.agentapi", "from papayya.runs import Runs", "papayya.runs", "standard library"),
    ],
)
def test_a_breach_is_reported_with_its_place_and_rule(
    module: str, source: str, imported: str, rule: str
) -> None:
    (found,) = violations(module, source)
    line = source.count("\n", 0, source.index("import"))
    path = module.replace(".", "/")
    assert found.startswith(f"{path}.py:{line + 1}: {module} imports {imported} ("), found
    assert rule in found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("server.x", "from web.app import init_app\nfrom workers import queue\nimport fakellm"),
        ("web.x", "from papayya.runs import Runs\nfrom projections import service\nimport os"),
        ("workers.x", "from projections import runner\nimport aiohttp"),
        ("eventstore.x", "from papayya.errors import InvalidEvent\nfrom sql import queries"),
        ("papayya.domain.x", "import msgspec\nfrom eventstore.types import NewEvent\nimport re"),
        ("papayya.runtime.x", "import json, socket\nfrom papayya import agentapi"),
        ("papayya", "def lazy():\n    from papayya.sdk import papayya\n"),
        ("fakellm.x", "import aiohttp\nfrom fakellm import sse"),
    ],
)
def test_what_the_rule_allows_passes(module: str, source: str) -> None:
    assert violations(module, source, is_package=module == "papayya") == []


def test_the_runtime_rule_covers_exactly_what_images_carry() -> None:
    """The checker's list of in-container modules is the image builder's."""
    carried = set()
    for _, rel in runtime_files():
        carried.add(layers.module_name(Path("papayya") / rel))
    covered = set()
    for path in (ROOT / "papayya").rglob("*.py"):
        module = layers.module_name(path.relative_to(ROOT))
        if layers.matches(module, layers.RUNTIME):
            covered.add(module)
    assert carried == covered
    assert {"papayya", "papayya.agentapi", "papayya.runtime.main"} <= covered

"""Tests share code only through ``tests.support``.

A test module that imports another test module (or ``tests.conftest``) runs that module's
tests' imports and fixtures too, ties two files that change for different reasons, and hides
the helper where no one looks for it. So ``test_*.py`` and ``conftest.py`` files import from
``tests.support`` and from nothing else under ``tests``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).parents[1]


def imports_under_tests(source: str) -> list[tuple[int, str]]:
    """Every module under ``tests`` that ``source`` imports, with its line, at any depth
    (imports inside functions count too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            if node.module == "tests":  # from tests import conftest
                modules = [f"tests.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom):  # from .test_x import y / from . import x
            base = "." * node.level + (node.module or "")
            modules = [base] if node.module else [base + a.name for a in node.names]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, m) for m in modules if under_tests(m)]
    return found


def under_tests(module: str) -> bool:
    return module == "tests" or module.startswith(("tests.", "."))


def forbidden(module: str) -> bool:
    """Whether importing ``module`` (one under ``tests``, or relative) shares test code other
    than through ``tests.support``."""
    return not (module == "tests.support" or module.startswith("tests.support."))


def violations(root: Path) -> list[str]:
    files = sorted({*root.rglob("test_*.py"), *root.rglob("conftest.py")})
    return [
        f"{path.relative_to(root.parent)}:{line}: imports {module}"
        for path in files
        for line, module in imports_under_tests(path.read_text())
        if forbidden(module)
    ]


def test_tests_share_code_only_through_tests_support() -> None:
    assert violations(TESTS) == []


@pytest.mark.parametrize(
    "source",
    [
        "from tests.integration.test_api_agents import create_agent",
        "from tests.conftest import Api",
        "import tests.unit.test_cron",
        "from tests import conftest",
        "from tests.integration import cloud_support",
        "from .test_runtime import AGENT",
        "from . import test_runtime",
        "def f():\n    from tests.conftest import running_api\n",
    ],
)
def test_an_import_of_test_code_is_found(source: str, tmp_path: Path) -> None:
    (tmp_path / "unit").mkdir()
    (tmp_path / "unit" / "test_x.py").write_text(source)
    assert len(violations(tmp_path)) == 1


@pytest.mark.parametrize(
    "source",
    [
        "from tests.support.api import Api",
        "from tests.support import cloud",
        "import tests.support.db",
        "from papayya.domain import events",
        "import pytest",
        "import testscenarios",
    ],
)
def test_an_import_of_tests_support_is_allowed(source: str, tmp_path: Path) -> None:
    (tmp_path / "unit").mkdir()
    (tmp_path / "unit" / "conftest.py").write_text(source)
    assert violations(tmp_path) == []

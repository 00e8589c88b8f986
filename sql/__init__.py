"""SQL files: the schema, ordered migrations and named query blocks.

A query block starts with a line ``-- name: <query_name>`` and runs to the next such line.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).parent
MIGRATIONS_DIR = SQL_DIR / "migrations"
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a file of ``-- name:`` blocks into a dict of name -> SQL."""
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def queries(filename: str) -> dict[str, str]:
    """The named blocks of ``sql/<filename>``, read once per process."""
    return parse_queries((SQL_DIR / filename).read_text())


def schema() -> str:
    return (SQL_DIR / "schema.sql").read_text()

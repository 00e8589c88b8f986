"""The installation's id: which database a process serves, as other processes can ask.

Two installations may share a machine, a Docker engine or a Redis. A worker checks at start
that the API its agents will call serves the same database (``/healthz`` says its id), and
labels its containers with the id, so that it only ever removes its own. The id is made at
the first start and kept in the database; a copy of the database (a restored dump) is the
same installation until ``DELETE FROM installation`` makes it a new one at its next start.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from sql import queries

Q: Final = queries("installation.sql")


async def installation_id(db: Any) -> str:
    """This database's installation id, made on first use (``db``: a pool or connection)."""
    found = await db.fetchval(Q["get"])
    if found is None:
        await db.execute(Q["create"], f"ins_{uuid.uuid4().hex}")
        found = await db.fetchval(Q["get"])
    return str(found)
